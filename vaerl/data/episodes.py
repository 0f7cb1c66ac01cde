"""Splitting frame datasets by episode, and finding test frames that leak from training.

Frames of one episode are strongly correlated, so every held-out set is made of whole episodes.
Two protocols live here:

* :func:`split_train_val` – pretraining: hold out a fraction of all episodes for validation;
* :func:`split_episodes` – the AtariARI probe protocol (Anand et al. 2019, ``get_episodes``):
  drop episodes shorter than ``min_length``, shuffle the rest, cut them 70 / 10 / 20 into
  train / validation / test; :func:`drop_duplicates` then removes test frames that also occur in
  train or validation (AtariARI's ``remove_duplicates``).
"""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from vaerl.errors import DatasetError

if TYPE_CHECKING:
    from vaerl.data.dataset import FrameDataset


@dataclass(frozen=True)
class EpisodeSplit:
    """Frame indices of the train / validation / test episodes."""

    train: np.ndarray
    val: np.ndarray
    test: np.ndarray
    short_episodes: int = 0
    """Episodes dropped for being shorter than ``min_length``."""


def frames_of(episodes: np.ndarray, chosen: np.ndarray) -> np.ndarray:
    """Indices of the frames whose episode id is in ``chosen``."""
    return np.flatnonzero(np.isin(episodes, chosen))


def split_train_val(episodes: np.ndarray, val_fraction: float, seed: int = 0,
                    where: str = "the dataset") -> tuple[np.ndarray, np.ndarray]:
    """Indices of train and validation frames; ``val_fraction`` of the episodes (at least one) are held out."""
    episodes = np.asarray(episodes)
    episode_ids = np.unique(episodes)
    if len(episode_ids) < 2:
        raise DatasetError(f"{where} has {len(episode_ids)} episode(s): collect more frames to hold "
                           "out whole episodes for validation")
    rng = np.random.default_rng(seed)
    n_val = min(len(episode_ids) - 1, max(1, round(val_fraction * len(episode_ids))))
    is_val = np.isin(episodes, rng.choice(episode_ids, size=n_val, replace=False))
    return np.flatnonzero(~is_val), np.flatnonzero(is_val)


def split_episodes(
    episodes: np.ndarray,
    *,
    val_fraction: float = 0.1,
    test_fraction: float = 0.2,
    min_length: int = 64,
    seed: int = 0,
) -> EpisodeSplit:
    """Shuffle whole episodes and cut them into train / val / test (AtariARI: 0.7 / 0.1 / 0.2)."""
    episodes = np.asarray(episodes)
    ids, lengths = np.unique(episodes, return_counts=True)
    kept = ids[lengths >= min_length]
    if len(kept) < 3:
        raise DatasetError(f"only {len(kept)} of {len(ids)} episodes have at least {min_length} frames; the probe "
                           "needs 3 or more to hold out validation and test episodes: collect more frames "
                           "(probe.frames=...) or lower probe.min_episode_length")
    order = np.random.default_rng(seed).permutation(kept)
    n_val = max(1, round(val_fraction * len(order)))
    n_test = max(1, round(test_fraction * len(order)))
    n_train = len(order) - n_val - n_test
    if n_train < 1:
        raise DatasetError(f"{len(order)} episodes are too few for val_fraction={val_fraction} and "
                           f"test_fraction={test_fraction}; collect more frames")
    parts = order[:n_train], order[n_train:n_train + n_val], order[n_train + n_val:]
    train, val, test = (frames_of(episodes, part) for part in parts)
    return EpisodeSplit(train, val, test, int((lengths < min_length).sum()))


def frame_hashes(dataset: FrameDataset, indices: np.ndarray, frame_stack: int = 1, batch_size: int = 1024) -> list[bytes]:
    """A 16-byte digest of each (stacked) frame, to find exact duplicates."""
    digests = []
    for start in range(0, len(indices), batch_size):
        frames = dataset.stacked_frames(indices[start:start + batch_size], frame_stack)
        digests += [hashlib.blake2b(frame.tobytes(), digest_size=16).digest() for frame in frames]
    return digests


def drop_duplicates(dataset: FrameDataset, split: EpisodeSplit, frame_stack: int = 1) -> tuple[EpisodeSplit, int]:
    """Remove test frames identical to a train or validation frame (AtariARI's ``remove_duplicates``)."""
    seen = set(frame_hashes(dataset, np.concatenate([split.train, split.val]), frame_stack))
    test_hashes = frame_hashes(dataset, split.test, frame_stack)
    keep = np.array([h not in seen for h in test_hashes], dtype=bool)
    return dataclasses.replace(split, test=split.test[keep]), int((~keep).sum())


__all__ = ["EpisodeSplit", "drop_duplicates", "frame_hashes", "frames_of", "split_episodes", "split_train_val"]
