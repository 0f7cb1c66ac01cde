"""Random minibatches of frames from a memory-mapped dataset, prefetched on a background thread.

Gathering frames from the memory map (numpy copies release the GIL) overlaps with the model's
step, so the training loop rarely waits for data; ``wait_seconds`` measures how often it does.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Iterator

import numpy as np
import torch

from vaerl.data.dataset import FrameDataset


class BatchLoader:
    """Endless iterator of uint8 ``(B, C*frame_stack, H, W)`` tensors drawn from ``indices``.

    ``skip`` batches are drawn (not loaded) first, so a run resumed at step ``skip`` sees the same
    batches as one that was never interrupted.
    """

    def __init__(
        self,
        dataset: FrameDataset,
        indices: np.ndarray,
        batch_size: int,
        *,
        frame_stack: int = 1,
        seed: int = 0,
        skip: int = 0,
        prefetch: int = 4,
        pin_memory: bool = False,
    ) -> None:
        if len(indices) == 0:
            raise ValueError("cannot draw batches from an empty index set")
        self.dataset, self.indices = dataset, np.asarray(indices)
        self.batch_size, self.frame_stack = batch_size, frame_stack
        self.pin_memory = pin_memory
        self.rng = np.random.default_rng(seed)
        for _ in range(skip):  # a resumed run draws the batches an uninterrupted one would have drawn next
            self._draw()
        self.wait_seconds = 0.0
        self._queue: queue.Queue[torch.Tensor] = queue.Queue(maxsize=prefetch)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._produce, daemon=True)
        self._thread.start()

    def __iter__(self) -> Iterator[torch.Tensor]:
        return self

    def __next__(self) -> torch.Tensor:
        start = time.perf_counter()
        batch = self._queue.get()
        self.wait_seconds += time.perf_counter() - start
        return batch

    def close(self) -> None:
        self._stop.set()
        while self._thread.is_alive():
            try:
                self._queue.get_nowait()
            except queue.Empty:
                pass
            self._thread.join(timeout=0.05)

    def _draw(self) -> np.ndarray:
        """The sorted frame indices of the next batch."""
        return np.sort(self.rng.choice(self.indices, size=self.batch_size, replace=len(self.indices) < self.batch_size))

    def _produce(self) -> None:
        while not self._stop.is_set():
            picks = self._draw()
            batch = torch.from_numpy(self.dataset.stacked_frames(picks, self.frame_stack))
            if self.pin_memory:
                batch = batch.pin_memory()
            while not self._stop.is_set():
                try:
                    self._queue.put(batch, timeout=0.1)
                    break
                except queue.Full:
                    continue


def iterate_in_order(dataset: FrameDataset, indices: np.ndarray, batch_size: int, frame_stack: int = 1) -> Iterator[torch.Tensor]:
    """Deterministic pass over ``indices`` in batches (validation, encoding a whole dataset)."""
    for start in range(0, len(indices), batch_size):
        yield torch.from_numpy(dataset.stacked_frames(indices[start:start + batch_size], frame_stack))
