"""Exceptions raised by vaerl. Each message says what was wrong and how to fix it."""

from __future__ import annotations


class VaerlError(Exception):
    """Base class of every error vaerl raises on purpose."""


class ConfigError(VaerlError, ValueError):
    """A configuration value or key is invalid."""


class CheckpointError(VaerlError, ValueError):
    """A checkpoint is missing, corrupt, or does not fit the requested use."""


class DatasetError(VaerlError, ValueError):
    """A dataset on disk is missing, incomplete, corrupt, or has the wrong shape."""


class ObservationError(VaerlError, ValueError):
    """An observation or observation space does not fit what the encoder expects."""


class TrainingError(VaerlError, RuntimeError):
    """Training diverged or cannot continue (for example a NaN loss)."""
