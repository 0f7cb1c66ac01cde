"""Action heads: features -> the parameters of p(a_{t:t+k} | .) for a chunk of ``k`` actions.

The CVAE and regression BC use the heads here; the mixture head of the MDN baseline lives with it
(:mod:`vaerl.models.bc.mdn`).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

ACTION_HEADS = ("categorical", "gaussian", "mean")
LOG_STD_RANGE = (-5.0, 1.0)


class ActionHead(nn.Module):
    """Parameters of p(a_{t:t+k} | features) for a chunk of ``chunk`` actions.

    A network ends in a linear layer of ``chunk * num_params`` outputs, reshaped to
    ``(N, chunk, num_params)``. Continuous targets are floats ``(N, chunk, action_dim)`` (already
    scaled to [-1, 1] by the policy); discrete targets are indices ``(N, chunk)``.

    For execution a head gives a *point* per chunk step (continuous: an action; discrete: class
    probabilities), which a policy may average over overlapping chunks (temporal ensembling), and
    :meth:`act` turns the averaged point into the action.
    """

    num_params: int
    discrete: bool = False

    def __init__(self, action_dim: int, chunk: int) -> None:
        super().__init__()
        self.action_dim, self.chunk = action_dim, chunk

    @property
    def out_features(self) -> int:
        return self.chunk * self.num_params

    def reshape(self, raw: torch.Tensor) -> torch.Tensor:
        return raw.view(raw.shape[0], self.chunk, self.num_params)

    def target_features(self, actions: torch.Tensor) -> torch.Tensor:
        """Flat ``(N, chunk * d)`` view of target actions, as input for a posterior network."""
        return actions.flatten(1).float()

    @property
    def target_feature_dim(self) -> int:
        return self.chunk * self.action_dim

    def nll(self, params: torch.Tensor, actions: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """-log p(a_{t:t+k} | .) per sample ``(N,)``; ``mask`` ``(N, chunk)`` drops steps past an episode's end."""
        return (self.step_nll(params, actions) * mask).sum(1)

    def step_nll(self, params: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """-log p(a_t | .) per chunk step ``(N, chunk)``, for heads that factorise over steps."""
        raise NotImplementedError

    def point(self, params: torch.Tensor, deterministic: bool, generator: torch.Generator | None) -> torch.Tensor:
        """The value to execute or average for every chunk step, ``(N, chunk, point_dim)``."""
        raise NotImplementedError

    def act(self, point: torch.Tensor, params: torch.Tensor, deterministic: bool,
            generator: torch.Generator | None) -> torch.Tensor:
        """Action from an (ensembled) point ``(N, point_dim)`` and this step's parameters ``(N, num_params)``."""
        return point


class CategoricalHead(ActionHead):
    """Logits over ``action_dim`` discrete actions; the loss is cross-entropy."""

    discrete = True

    def __init__(self, action_dim: int, chunk: int) -> None:
        super().__init__(action_dim, chunk)
        self.num_params = action_dim

    def target_features(self, actions: torch.Tensor) -> torch.Tensor:
        return F.one_hot(actions.long(), self.action_dim).flatten(1).float()

    def step_nll(self, params: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(params.flatten(0, 1), actions.long().flatten(), reduction="none").view(actions.shape)

    def point(self, params: torch.Tensor, deterministic: bool, generator: torch.Generator | None) -> torch.Tensor:
        return params.softmax(-1)

    def act(self, point: torch.Tensor, params: torch.Tensor, deterministic: bool,
            generator: torch.Generator | None) -> torch.Tensor:
        if deterministic:
            return point.argmax(-1)
        return torch.multinomial(point, 1, generator=generator).squeeze(-1)


class GaussianHead(ActionHead):
    """Diagonal Gaussian with state-dependent standard deviation; the loss is its NLL."""

    def __init__(self, action_dim: int, chunk: int) -> None:
        super().__init__(action_dim, chunk)
        self.num_params = 2 * action_dim

    def split(self, params: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mean, log_std = params.chunk(2, dim=-1)
        return mean, log_std.clamp(*LOG_STD_RANGE)

    def step_nll(self, params: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        mean, log_std = self.split(params)
        z = (actions - mean) * torch.exp(-log_std)
        return (0.5 * z.pow(2) + log_std + 0.5 * math.log(2 * math.pi)).sum(-1)

    def point(self, params: torch.Tensor, deterministic: bool, generator: torch.Generator | None) -> torch.Tensor:
        return self.split(params)[0]

    def act(self, point: torch.Tensor, params: torch.Tensor, deterministic: bool,
            generator: torch.Generator | None) -> torch.Tensor:
        if deterministic:
            return point
        _, log_std = self.split(params)
        noise = torch.randn(point.shape, generator=generator, device=point.device)
        return point + log_std.exp() * noise


class MeanHead(ActionHead):
    """A point prediction; the loss is the squared error summed over action dimensions (regression)."""

    def __init__(self, action_dim: int, chunk: int) -> None:
        super().__init__(action_dim, chunk)
        self.num_params = action_dim

    def step_nll(self, params: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        return (params - actions).pow(2).sum(-1)

    def point(self, params: torch.Tensor, deterministic: bool, generator: torch.Generator | None) -> torch.Tensor:
        return params


def make_action_head(kind: str, action_dim: int, chunk: int) -> ActionHead:
    """A categorical (Discrete actions), Gaussian or mean (Box actions) head."""
    heads: dict[str, type[ActionHead]] = {"categorical": CategoricalHead, "gaussian": GaussianHead, "mean": MeanHead}
    if kind not in heads:
        raise ValueError(f"action head must be one of {ACTION_HEADS}, got {kind!r}")
    return heads[kind](action_dim, chunk)
