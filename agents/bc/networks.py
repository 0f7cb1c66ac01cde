"""The networks behind the BC policies; all share one interface so one training loop and one
``predict`` serve them all.

* :class:`~vaerl.models.cvae.CVAE`: p(a | s) = ∫ p(a | s, z) p(z | s) dz (multimodal, commits per episode).
* :class:`RegressionNet` with a ``mean`` head: regression BC by MSE (continuous actions); with a
  ``categorical`` head: BC by cross-entropy (discrete actions); with a ``mixture`` head: a mixture
  density network.
"""

from __future__ import annotations

from typing import Protocol

import torch
from torch import nn

from vaerl.models.blocks import mlp
from vaerl.models.cvae import ActionHead, ObservationEncoder, PolicyLoss, make_action_head


class BCNetwork(Protocol):
    """What :class:`~agents.bc.policy.BCPolicy` and :func:`~agents.bc.train.train_bc` need from a network."""

    obs_encoder: ObservationEncoder
    head: ActionHead

    @property
    def noise_dim(self) -> int:
        """Size of the per-episode noise that :meth:`action_params` takes (0: none)."""
        ...

    def loss(self, obs: torch.Tensor, actions: torch.Tensor, mask: torch.Tensor, kl_weight: float) -> PolicyLoss: ...

    def action_params(self, obs: torch.Tensor, noise: torch.Tensor | None) -> torch.Tensor:
        """Parameters of the action chunk distribution ``(N, chunk, num_params)`` (``noise=None``: prior mean)."""
        ...


class RegressionNet(nn.Module):
    """Observation -> action-chunk distribution, no latent: the regression / cross-entropy / MDN baselines."""

    def __init__(
        self,
        obs_shape: tuple[int, ...],
        action_dim: int,
        head: str,
        chunk: int,
        hidden: list[int],
        conv_layers: list[list[int]],
        image_features: int,
        components: int = 5,
    ) -> None:
        super().__init__()
        self.obs_encoder = ObservationEncoder(obs_shape, conv_layers, image_features)
        self.head = make_action_head(head, action_dim, chunk, components)
        self.net = mlp(self.obs_encoder.out_dim, hidden, self.head.out_features)

    @property
    def noise_dim(self) -> int:
        return 0

    def loss(self, obs: torch.Tensor, actions: torch.Tensor, mask: torch.Tensor, kl_weight: float) -> PolicyLoss:
        recon = self.head.nll(self.action_params(obs), actions, mask).mean()
        return PolicyLoss(recon, recon.detach(), torch.zeros((), device=recon.device))

    def action_params(self, obs: torch.Tensor, noise: torch.Tensor | None = None) -> torch.Tensor:
        return self.head.reshape(self.net(self.obs_encoder(obs)))
