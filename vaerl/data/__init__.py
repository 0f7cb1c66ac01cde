"""Frame datasets: collection from envs, memory-mapped storage, episode splits and batch loading."""

from vaerl.data.collect import collect_frames, dataset_name, ensure_dataset, get_ram
from vaerl.data.dataset import FrameDataset, FrameDatasetWriter, read_meta
from vaerl.data.episodes import EpisodeSplit, drop_duplicates, split_episodes, split_train_val
from vaerl.data.loader import Batch, BatchLoader, iterate_in_order

__all__ = ["Batch", "BatchLoader", "EpisodeSplit", "FrameDataset", "FrameDatasetWriter", "collect_frames", "dataset_name",
           "drop_duplicates", "ensure_dataset", "get_ram", "iterate_in_order", "read_meta", "split_episodes",
           "split_train_val"]
