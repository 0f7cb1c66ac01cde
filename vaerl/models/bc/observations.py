"""Observations -> features for the BC networks: vectors and latents are standardised, images go through a conv trunk."""

from __future__ import annotations

import math

import torch
from torch import nn

from vaerl.models.blocks import ConvEncoderTrunk, as_layers, conv_output_sizes, to_unit


class ObservationEncoder(nn.Module):
    """Observations -> features.

    ``(D,)`` vectors (raw states or vaerl latents) are standardised with stored statistics (see
    :meth:`set_normalization`); ``(C, H, W)`` uint8 images go through a conv trunk and one linear
    layer.
    """

    def __init__(self, obs_shape: tuple[int, ...], conv_layers: list[list[int]], image_features: int) -> None:
        super().__init__()
        self.obs_shape = tuple(obs_shape)
        self.is_image = len(self.obs_shape) == 3
        if self.is_image:
            channels, height, width = self.obs_shape
            layers = as_layers(conv_layers)
            grid = conv_output_sizes((height, width), layers)[-1]
            self.trunk = ConvEncoderTrunk(channels, layers)
            self.project = nn.Sequential(
                nn.Linear(self.trunk.out_channels * math.prod(grid), image_features), nn.ReLU(inplace=True)
            )
            self.out_dim = image_features
        elif len(self.obs_shape) == 1:
            self.register_buffer("obs_mean", torch.zeros(self.obs_shape))
            self.register_buffer("obs_std", torch.ones(self.obs_shape))
            self.out_dim = self.obs_shape[0]
        else:
            raise ValueError(f"observations must be vectors (D,) or images (C, H, W), got shape {self.obs_shape}")

    @torch.no_grad()
    def set_normalization(self, observations: torch.Tensor) -> None:
        """Standardise vector observations with the statistics of ``observations`` (N, D); no-op for images."""
        if self.is_image:
            return
        observations = observations.float()
        self.obs_mean.copy_(observations.mean(0))
        # constant features (a fixed obstacle radius) keep unit scale instead of dividing by ~0
        self.obs_std.copy_(observations.std(0).clamp(min=1e-3) if len(observations) > 1 else torch.ones_like(self.obs_std))

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        if self.is_image:
            return self.project(self.trunk(to_unit(obs)).flatten(1))
        return (obs.float() - self.obs_mean) / self.obs_std
