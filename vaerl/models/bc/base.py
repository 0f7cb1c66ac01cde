"""What every BC network offers, so one policy class and one training loop serve them all."""

from __future__ import annotations

from typing import NamedTuple, Protocol

import torch

from vaerl.models.bc.heads import ActionHead
from vaerl.models.bc.observations import ObservationEncoder


class PolicyLoss(NamedTuple):
    loss: torch.Tensor  # what the optimiser minimises
    recon: torch.Tensor  # -log p(a | .) per sample (chunk summed over valid steps), batch mean
    kl: torch.Tensor  # KL(q || prior) per sample, batch mean (0 for non-latent policies)


class BCNetwork(Protocol):
    """What a BC policy and its training loop need from a network."""

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
