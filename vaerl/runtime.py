"""Process-level settings: seeding, device choice and torch threads."""

from __future__ import annotations

import os
import random

import numpy as np
import torch

from vaerl.errors import ConfigError


def seed_everything(seed: int) -> np.random.Generator:
    """Seed python, numpy and torch from one integer and return a numpy Generator for local use.

    Environments and action spaces are seeded where they are created (``env.reset(seed=...)``,
    ``env.action_space.seed(...)``), from the same integer.
    """
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    return np.random.default_rng(seed)


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """Turn ``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:1"`` or ``"mps"`` into a usable torch device."""
    if isinstance(device, torch.device):
        return device
    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("cpu")
    try:
        resolved = torch.device(device)
    except RuntimeError as exc:
        raise ConfigError(f"unknown device {device!r}: use auto, cpu, cuda or cuda:N") from exc
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device={device} was requested but CUDA is not available here: use device=auto or device=cpu")
    return resolved


def configure_threads(num_threads: int | None = None) -> None:
    """Set torch's intra-op threads (default: all cores, at most 8; small conv nets gain little beyond)."""
    if num_threads is None or num_threads <= 0:
        num_threads = min(8, os.cpu_count() or 1)
    torch.set_num_threads(num_threads)
