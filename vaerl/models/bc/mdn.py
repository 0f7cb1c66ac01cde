"""Mixture-density BC: a regression network whose head is a mixture of Gaussians over the action chunk."""

from __future__ import annotations

import math

import torch

from vaerl.models.bc.heads import LOG_STD_RANGE, ActionHead
from vaerl.models.bc.regression import RegressionNet


class MixtureHead(ActionHead):
    """Mixture of ``components`` diagonal Gaussians over the whole chunk (a mixture density network).

    One component is picked per prediction (sampled by its weight, or the heaviest when
    deterministic) and its mean chunk is the point; so a prediction never averages modes.
    """

    def __init__(self, action_dim: int, chunk: int, components: int) -> None:
        super().__init__(action_dim, chunk)
        self.components = components
        # per chunk step: component logits (repeated per step, only step 0's are used), means, log-stds
        self.num_params = components * (1 + 2 * action_dim)

    def split(self, params: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        n, k, _ = params.shape
        logits = params[:, 0, : self.components]  # one mixture over the whole chunk
        rest = params[..., self.components:].view(n, k, self.components, 2 * self.action_dim)
        mean, log_std = rest.chunk(2, dim=-1)
        return logits, mean, log_std.clamp(*LOG_STD_RANGE)

    def nll(self, params: torch.Tensor, actions: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        logits, mean, log_std = self.split(params)
        z = (actions.unsqueeze(2) - mean) * torch.exp(-log_std)
        step_ll = -(0.5 * z.pow(2) + log_std + 0.5 * math.log(2 * math.pi)).sum(-1)  # (N, k, K)
        # log p(chunk) = logsumexp_c [log w_c + sum_t log N_c(a_t)] over the valid steps
        chunk_ll = (step_ll * mask.unsqueeze(-1)).sum(1)
        return -torch.logsumexp(logits.log_softmax(-1) + chunk_ll, dim=-1)

    def point(self, params: torch.Tensor, deterministic: bool, generator: torch.Generator | None) -> torch.Tensor:
        logits, mean, _ = self.split(params)
        if deterministic:
            index = logits.argmax(-1)
        else:
            index = torch.multinomial(logits.softmax(-1), 1, generator=generator).squeeze(-1)
        return mean[torch.arange(mean.shape[0], device=mean.device), :, index]


def mdn_network(
    obs_shape: tuple[int, ...],
    action_dim: int,
    chunk: int,
    components: int,
    hidden: list[int],
    conv_layers: list[list[int]],
    image_features: int,
) -> RegressionNet:
    """An MDN for Box actions: :class:`RegressionNet` with a :class:`MixtureHead`."""
    return RegressionNet(obs_shape, MixtureHead(action_dim, chunk, components), hidden, conv_layers, image_features)
