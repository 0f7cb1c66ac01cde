"""Batches of raw env observations: one array, or a dict of arrays for a gymnasium ``Dict`` space.

Wrappers and data collection hand observations to a :class:`~vaerl.preprocessing.PreprocessSpec`
in batches ``(N, ...)``; these helpers build and slice such batches for either form.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


def batch_of_one(observation: Any) -> Any:
    """One observation as a batch of one (a leading axis of length 1 on the array or on every dict entry)."""
    if isinstance(observation, dict):
        return {key: np.asarray(value)[None] for key, value in observation.items()}
    return np.asarray(observation)[None]


def stack_observations(observations: Sequence[Any]) -> Any:
    """Single observations -> one batch (arrays stacked; dicts stacked key by key)."""
    if isinstance(observations[0], dict):
        return {key: np.stack([o[key] for o in observations]) for key in observations[0]}
    return np.stack(observations)


def take(batch: Any, indices: np.ndarray) -> Any:
    """The rows ``indices`` of a batch."""
    if isinstance(batch, dict):
        return {key: value[indices] for key, value in batch.items()}
    return batch[indices]


__all__ = ["batch_of_one", "stack_observations", "take"]
