"""Random minibatches of frames from a memory-mapped dataset, prefetched on a background thread.

Gathering frames from the memory map (numpy copies release the GIL) overlaps with the model's
step, so the training loop rarely waits for data; ``wait_seconds`` measures how often it does.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Iterator
from typing import NamedTuple

import numpy as np
import torch

from vaerl.data.dataset import FrameDataset
from vaerl.errors import DatasetError


class Batch(NamedTuple):
    """One minibatch: uint8 frames ``(B, C*frame_stack, H, W)``; when asked for, the int64 actions ``(B / 2,)``
    taken from the first half's frames (the anchors of a paired batch), and the frames one step earlier in their
    episodes, shaped as ``frames`` (an episode's first frame is its own previous one)."""

    frames: torch.Tensor
    actions: torch.Tensor | None = None
    previous: torch.Tensor | None = None


class BatchLoader:
    """Endless iterator of :class:`Batch` es drawn from ``indices``.

    ``skip`` batches are drawn (not loaded) first, so a run resumed at step ``skip`` sees the same
    batches as one that was never interrupted. With ``pair_offset=k > 0`` a batch is ``B / 2`` frames drawn
    from those that have a frame ``k`` steps later in their episode, then those later frames in the same
    order (objectives over pairs of frames, :attr:`vaerl.models.FrameModel.pair_offset`). ``num_actions=n > 0``
    adds the action taken from each anchor (the dataset's ``action`` extra, checked once to lie in ``[0, n)``;
    objectives that read actions, :attr:`vaerl.models.FrameModel.num_actions`), which needs pairs one step apart.
    ``previous=True`` adds each frame's predecessor in its episode (``weighting=motion``).
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
        pair_offset: int = 0,
        num_actions: int = 0,
        previous: bool = False,
    ) -> None:
        if len(indices) == 0:
            raise ValueError("cannot draw batches from an empty index set")
        if num_actions and pair_offset != 1:
            raise ValueError(f"actions come with pairs of frames one step apart (the action leads from one to the "
                             f"other), got pair_offset={pair_offset}")
        self.dataset, self.indices = dataset, np.asarray(indices)
        self.batch_size, self.frame_stack, self.pair_offset = batch_size, frame_stack, pair_offset
        self.previous = previous
        self.action_of = stored_actions(dataset, num_actions) if num_actions else None
        if pair_offset:
            if batch_size % 2:
                raise ValueError(f"a batch of pairs of frames needs an even batch size, got {batch_size}: set "
                                 "train.batch_size to an even number (per process, under torchrun)")
            self.indices = frames_with_partner(dataset, self.indices, pair_offset)
        self.pin_memory = pin_memory
        self.rng = np.random.default_rng(seed)
        for _ in range(skip):  # a resumed run draws the batches an uninterrupted one would have drawn next
            self._draw()
        self.wait_seconds = 0.0
        self._queue: queue.Queue[Batch] = queue.Queue(maxsize=prefetch)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._produce, daemon=True)
        self._thread.start()

    def __iter__(self) -> Iterator[Batch]:
        return self

    def __next__(self) -> Batch:
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
        """The frame indices of the next batch: sorted, or sorted anchors then their partners."""
        size = self.batch_size // 2 if self.pair_offset else self.batch_size
        picks = np.sort(self.rng.choice(self.indices, size=size, replace=len(self.indices) < size))
        return np.concatenate([picks, picks + self.pair_offset]) if self.pair_offset else picks

    def _produce(self) -> None:
        while not self._stop.is_set():
            picks = self._draw()
            previous = None
            if self.previous:  # one more frame of history: the stack before is the window one step back
                window = torch.from_numpy(self.dataset.stacked_frames(picks, self.frame_stack + 1))
                per_frame = window.shape[1] // (self.frame_stack + 1)
                frames, previous = window[:, per_frame:], window[:, :-per_frame]
            else:
                frames = torch.from_numpy(self.dataset.stacked_frames(picks, self.frame_stack))
            actions = None
            if self.action_of is not None:  # the action taken from each anchor, the first half of the picks
                actions = torch.from_numpy(self.action_of[picks[: len(picks) // 2]])
            if self.pin_memory:
                frames = frames.pin_memory()
                previous = previous.pin_memory() if previous is not None else None
            batch = Batch(frames, actions, previous)
            while not self._stop.is_set():
                try:
                    self._queue.put(batch, timeout=0.1)
                    break
                except queue.Full:
                    continue


def frames_followed_in_episode(dataset: FrameDataset, indices: np.ndarray, offset: int) -> np.ndarray:
    """Those of ``indices`` whose episode goes on for ``offset`` more frames (episodes are stored contiguously)."""
    episodes = dataset.episodes
    later = np.minimum(indices + offset, len(episodes) - 1)
    return indices[(indices + offset < len(episodes)) & (episodes[later] == episodes[indices])]


def frames_with_partner(dataset: FrameDataset, indices: np.ndarray, offset: int) -> np.ndarray:
    """:func:`frames_followed_in_episode`, refusing a dataset where no frame has a partner ``offset`` steps later."""
    kept = frames_followed_in_episode(dataset, indices, offset)
    if len(kept) == 0:
        raise DatasetError(f"no frame of dataset {dataset.path} has a frame {offset} steps later in its episode, so "
                           f"there are no pairs of frames {offset} apart (model.contrast_offset, or 1 for the "
                           "inverse-dynamics term): lower model.contrast_offset, or collect longer episodes "
                           "(more data.frames)")
    return kept


def stored_actions(dataset: FrameDataset, num_actions: int) -> np.ndarray:
    """The action taken from each frame of ``dataset`` as int64 ``(len(dataset),)``, checked to lie in
    ``[0, num_actions)`` (read once: 8 bytes a frame)."""
    if "action" not in dataset.extra_names:
        raise DatasetError(f"dataset {dataset.path} stores no actions (its extras: {dataset.extra_names}), and the "
                           "objective predicts them: pretrain with 'action' in data.extras (a dataset of its own)")
    stored = dataset.extra("action")
    if stored.shape != (len(dataset),) or not np.issubdtype(stored.dtype, np.integer):
        raise DatasetError(f"dataset {dataset.path} stores {stored.dtype} actions of shape {stored.shape[1:]}, not one "
                           "discrete action per frame: an objective over actions needs an env with a Discrete action space")
    actions = stored.astype(np.int64)
    if len(actions) and not 0 <= actions.min() <= actions.max() < num_actions:
        raise DatasetError(f"dataset {dataset.path} holds actions {actions.min()}..{actions.max()}, and the model "
                           f"tells {num_actions} apart: frames of another action space (env.full_action_space, or an "
                           "agent of another env); pretrain with the env the frames came from")
    return actions


def iterate_in_order(dataset: FrameDataset, indices: np.ndarray, batch_size: int, frame_stack: int = 1) -> Iterator[torch.Tensor]:
    """Deterministic pass over ``indices`` in batches (validation, encoding a whole dataset)."""
    for start in range(0, len(indices), batch_size):
        yield torch.from_numpy(dataset.stacked_frames(indices[start:start + batch_size], frame_stack))
