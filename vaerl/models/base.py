"""What every vaerl frame model offers to training, checkpoints and wrappers."""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar, NamedTuple

import torch
from torch import nn


class LossOutput(NamedTuple):
    """One training step's result.

    ``loss`` is what the optimiser minimises (it may use pixel weights); ``metrics`` hold scalar
    tensors for logging (unweighted likelihood terms, KL, perplexity, ...); ``recon`` is the
    reconstruction mean in [0, 1].
    """

    loss: torch.Tensor
    recon: torch.Tensor
    metrics: dict[str, torch.Tensor]


class FrameModel(nn.Module):
    """Base class: a generative model of uint8 frames with a deterministic feature for agents.

    Subclasses set ``kind`` (the name stored in checkpoints) and ``config_class`` (a dataclass of
    constructor keyword arguments) and implement the methods below. Inputs are float frames in
    [0, 1] of shape ``(N, C, H, W)`` (see :func:`vaerl.models.blocks.to_unit`).
    """

    kind: ClassVar[str]
    config_class: ClassVar[type]

    def __init__(self, config: Any) -> None:
        super().__init__()
        self.config = config

    @property
    def feature_dim(self) -> int:
        """Size of :meth:`features` per frame."""
        raise NotImplementedError

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Deterministic latent features ``(N, feature_dim)`` (VAE: posterior mean; VQ-VAE: quantised grid)."""
        raise NotImplementedError

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """Decoder mean of the reconstruction, in [0, 1]."""
        raise NotImplementedError

    def training_loss(self, x: torch.Tensor, pixel_weights: torch.Tensor | None = None, step: int = 0) -> LossOutput:
        raise NotImplementedError

    def config_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self.config)
