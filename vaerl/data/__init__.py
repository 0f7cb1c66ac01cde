"""Frame datasets: collection from envs, memory-mapped storage and batch loading."""

from vaerl.data.collect import collect_frames, dataset_name, ensure_dataset, get_ram
from vaerl.data.dataset import FrameDataset, FrameDatasetWriter, read_meta
from vaerl.data.loader import BatchLoader, iterate_in_order

__all__ = ["BatchLoader", "FrameDataset", "FrameDatasetWriter", "collect_frames", "dataset_name",
           "ensure_dataset", "get_ram", "iterate_in_order", "read_meta"]
