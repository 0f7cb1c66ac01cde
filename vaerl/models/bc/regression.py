"""Observation -> action-chunk distribution with no latent: regression BC (MSE) and BC by cross-entropy.

With a ``mean`` head this is regression BC (Box actions), with a ``categorical`` head BC by
cross-entropy (Discrete actions); :mod:`vaerl.models.bc.mdn` gives it a mixture head.
"""

from __future__ import annotations

import torch
from torch import nn

from vaerl.models.bc.base import PolicyLoss
from vaerl.models.bc.heads import ActionHead
from vaerl.models.bc.observations import ObservationEncoder
from vaerl.models.blocks import mlp


class RegressionNet(nn.Module):
    """Features of the observation -> parameters of the action head, trained on the head's likelihood."""

    def __init__(
        self,
        obs_shape: tuple[int, ...],
        head: ActionHead,
        hidden: list[int],
        conv_layers: list[list[int]],
        image_features: int,
    ) -> None:
        super().__init__()
        self.obs_encoder = ObservationEncoder(obs_shape, conv_layers, image_features)
        self.head = head
        self.net = mlp(self.obs_encoder.out_dim, hidden, self.head.out_features)

    @property
    def noise_dim(self) -> int:
        return 0

    def loss(self, obs: torch.Tensor, actions: torch.Tensor, mask: torch.Tensor, kl_weight: float) -> PolicyLoss:
        recon = self.head.nll(self.action_params(obs), actions, mask).mean()
        return PolicyLoss(recon, recon.detach(), torch.zeros((), device=recon.device))

    def action_params(self, obs: torch.Tensor, noise: torch.Tensor | None = None) -> torch.Tensor:
        return self.head.reshape(self.net(self.obs_encoder(obs)))
