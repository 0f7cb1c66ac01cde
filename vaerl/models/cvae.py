"""Conditional VAE over actions for multimodal behaviour cloning (Sohn et al. 2015; robomimic's BC-VAE).

q(z | s, a) encodes which mode a demonstrated action (chunk) is in, p(a | s, z) decodes the action
for that mode, and the prior is N(0, I) or a learned p(z | s). Training minimises
``-log p(a | s, z) + beta * KL(q(z | s, a) || p(z | s))`` with ``z ~ q``; at test time ``z`` comes
from the prior, so a policy that keeps one ``z`` for a whole episode commits to one mode.

The pieces shared with the regression and mixture-density baselines live here as well:
:class:`ObservationEncoder` (vectors, latents or images) and the action heads, which turn features
into the parameters of p(a_{t:t+k} | .) for a chunk of ``k`` actions.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from vaerl.models.blocks import NATURE_LAYERS, ConvEncoderTrunk, as_layers, conv_output_sizes, mlp, to_unit
from vaerl.models.vae import gaussian_kl, reparameterize

ACTION_HEADS = ("categorical", "gaussian", "mean", "mixture")
LOG_STD_RANGE = (-5.0, 1.0)
LOGVAR_RANGE = (-12.0, 8.0)


# ---------------------------------------------------------------------------------------------- math
def gaussian_kl_between(
    mu_q: torch.Tensor, logvar_q: torch.Tensor, mu_p: torch.Tensor, logvar_p: torch.Tensor
) -> torch.Tensor:
    """KL(N(mu_q, exp(logvar_q)) || N(mu_p, exp(logvar_p))) per dimension, closed form."""
    return 0.5 * (logvar_p - logvar_q + (logvar_q.exp() + (mu_q - mu_p).pow(2)) / logvar_p.exp() - 1.0)


# ---------------------------------------------------------------------------------------------- observations
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


# ---------------------------------------------------------------------------------------------- action heads
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


def make_action_head(kind: str, action_dim: int, chunk: int, components: int = 5) -> ActionHead:
    if kind == "categorical":
        return CategoricalHead(action_dim, chunk)
    if kind == "gaussian":
        return GaussianHead(action_dim, chunk)
    if kind == "mean":
        return MeanHead(action_dim, chunk)
    if kind == "mixture":
        return MixtureHead(action_dim, chunk, components)
    raise ValueError(f"action head must be one of {ACTION_HEADS}, got {kind!r}")


# ---------------------------------------------------------------------------------------------- CVAE
PRIORS = ("standard", "learned", "mixture")


@dataclass
class CVAEConfig:
    obs_shape: tuple[int, ...] = (7,)
    """``(D,)`` for vectors and vaerl latents, ``(C, H, W)`` for uint8 images."""
    action_dim: int = 2
    """Size of a continuous action, or the number of discrete actions."""
    action_head: str = "gaussian"
    """``categorical`` (Discrete), ``gaussian`` or ``mean`` (Box)."""
    chunk: int = 1
    """Actions predicted per observation (action chunking; 1 = none)."""
    latent_dim: int = 2
    hidden: list[int] = field(default_factory=lambda: [256, 256])
    """Hidden layers of the posterior, prior and decoder MLPs."""
    prior: str = "standard"
    """``standard`` N(0, I); ``learned`` Gaussian p(z | s); ``mixture``: a learned mixture of
    ``prior_components`` Gaussians p(z | s) (robomimic's GMM prior), which can put one component
    on each mode instead of a hole between them."""
    prior_components: int = 5
    conv_layers: list[list[int]] = field(default_factory=lambda: [list(layer) for layer in NATURE_LAYERS])
    image_features: int = 256

    def __post_init__(self) -> None:
        self.obs_shape = tuple(int(v) for v in self.obs_shape)  # type: ignore[assignment]
        if self.action_head not in ("categorical", "gaussian", "mean"):
            raise ValueError(f"CVAE action_head must be categorical, gaussian or mean, got {self.action_head!r}")
        if self.prior not in PRIORS:
            raise ValueError(f"prior must be one of {PRIORS}, got {self.prior!r}")
        if self.latent_dim < 1 or self.chunk < 1 or self.action_dim < 1 or self.prior_components < 1:
            raise ValueError("latent_dim, chunk, action_dim and prior_components must all be >= 1")

    @property
    def components(self) -> int:
        return self.prior_components if self.prior == "mixture" else 1


class Prior(NamedTuple):
    """p(z | s) as a mixture of diagonal Gaussians (one component for ``standard`` and ``learned``)."""

    logits: torch.Tensor  # (N, K) component log-weights
    mu: torch.Tensor  # (N, K, D)
    logvar: torch.Tensor  # (N, K, D)

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        """log p(z | s) of ``z`` ``(N, D)``, ``(N,)``."""
        z = z.unsqueeze(1)
        log_normal = -0.5 * ((z - self.mu).pow(2) / self.logvar.exp() + self.logvar + math.log(2 * math.pi)).sum(-1)
        return torch.logsumexp(self.logits.log_softmax(-1) + log_normal, dim=-1)

    def mean(self) -> torch.Tensor:
        return (self.logits.softmax(-1).unsqueeze(-1) * self.mu).sum(1)

    def sample(self, noise: torch.Tensor) -> torch.Tensor:
        """A reparameterised draw from per-episode ``noise`` ``(N, D + 1)``: the last column picks the
        component (through the normal CDF and the weights' CDF), the others are the Gaussian noise."""
        eps, pick = noise[:, :-1], 0.5 * (1 + torch.erf(noise[:, -1:] / math.sqrt(2)))
        cdf = self.logits.softmax(-1).cumsum(-1)
        index = (cdf < pick).sum(-1).clamp(max=self.mu.shape[1] - 1)
        rows = torch.arange(len(index), device=index.device)
        return self.mu[rows, index] + (0.5 * self.logvar[rows, index]).exp() * eps


class CVAEOutput(NamedTuple):
    params: torch.Tensor  # (N, chunk, num_params): parameters of p(a | s, z)
    z: torch.Tensor  # a sample of the posterior
    mu: torch.Tensor  # posterior q(z | s, a)
    logvar: torch.Tensor
    prior: Prior  # p(z | s)


class PolicyLoss(NamedTuple):
    loss: torch.Tensor  # what the optimiser minimises
    recon: torch.Tensor  # -log p(a | .) per sample (chunk summed over valid steps), batch mean
    kl: torch.Tensor  # KL(q || prior) per sample, batch mean (0 for non-latent policies)


class CVAE(nn.Module):
    """Conditional VAE p(a | s) = ∫ p(a | s, z) p(z | s) dz with posterior q(z | s, a)."""

    def __init__(self, config: CVAEConfig) -> None:
        super().__init__()
        self.config = config
        self.obs_encoder = ObservationEncoder(config.obs_shape, config.conv_layers, config.image_features)
        self.head = make_action_head(config.action_head, config.action_dim, config.chunk)
        features, latent, components = self.obs_encoder.out_dim, config.latent_dim, config.components
        self.posterior = mlp(features + self.head.target_feature_dim, config.hidden, 2 * latent)
        self.decoder = mlp(features + latent, config.hidden, self.head.out_features)
        self.prior = None if config.prior == "standard" else mlp(features, config.hidden, components * (2 * latent + 1))

    @property
    def latent_dim(self) -> int:
        return self.config.latent_dim

    @property
    def noise_dim(self) -> int:
        """Size of the per-episode noise :meth:`action_params` takes (one more to pick a mixture component)."""
        return self.latent_dim + (1 if self.config.prior == "mixture" else 0)

    # ------------------------------------------------------------------ the CVAE pieces
    def encode(self, features: torch.Tensor, actions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """q(z | s, a): mean and log-variance ``(N, latent_dim)``."""
        mu, logvar = self.posterior(torch.cat([features, self.head.target_features(actions)], -1)).chunk(2, -1)
        return mu, logvar.clamp(*LOGVAR_RANGE)

    def prior_params(self, features: torch.Tensor) -> Prior:
        """p(z | s): N(0, I), a learned Gaussian, or a learned mixture of Gaussians."""
        n, latent, components = features.shape[0], self.latent_dim, self.config.components
        if self.prior is None:
            zeros = features.new_zeros(n, 1, latent)
            return Prior(features.new_zeros(n, 1), zeros, zeros)
        out = self.prior(features)
        logits, rest = out[:, :components], out[:, components:].view(n, components, 2 * latent)
        mu, logvar = rest.chunk(2, -1)
        return Prior(logits, mu, logvar.clamp(*LOGVAR_RANGE))

    def decode(self, features: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """Parameters of p(a | s, z), ``(N, chunk, num_params)``."""
        return self.head.reshape(self.decoder(torch.cat([features, z], -1)))

    def kl(self, out: CVAEOutput) -> torch.Tensor:
        """KL(q(z | s, a) || p(z | s)) per sample, summed over latent dimensions.

        Closed form for Gaussian priors; for a mixture prior, which has none, the one-sample
        estimate ``log q(z) - log p(z)`` at the posterior sample (as robomimic does).
        """
        if self.config.prior == "standard":
            return gaussian_kl(out.mu, out.logvar).sum(-1)
        if self.config.prior == "learned":
            return gaussian_kl_between(out.mu, out.logvar, out.prior.mu[:, 0], out.prior.logvar[:, 0]).sum(-1)
        log_q = -0.5 * ((out.z - out.mu).pow(2) / out.logvar.exp() + out.logvar + math.log(2 * math.pi)).sum(-1)
        return log_q - out.prior.log_prob(out.z)

    def forward(self, obs: torch.Tensor, actions: torch.Tensor) -> CVAEOutput:
        features = self.obs_encoder(obs)
        mu, logvar = self.encode(features, actions)
        z = reparameterize(mu, logvar)
        return CVAEOutput(self.decode(features, z), z, mu, logvar, self.prior_params(features))

    def loss(self, obs: torch.Tensor, actions: torch.Tensor, mask: torch.Tensor, kl_weight: float) -> PolicyLoss:
        """Negative ELBO with a weighted KL: ``-log p(a | s, z) + kl_weight * KL``, batch means."""
        out = self.forward(obs, actions)
        recon = self.head.nll(out.params, actions, mask).mean()
        kl = self.kl(out).mean()
        return PolicyLoss(recon + kl_weight * kl, recon.detach(), kl.detach())

    # ------------------------------------------------------------------ acting
    def action_params(self, obs: torch.Tensor, noise: torch.Tensor | None) -> torch.Tensor:
        """Parameters of p(a | s, z) for a prior draw ``z`` made from ``noise`` ``(N, noise_dim)``.

        ``z = mu_k(s) + sigma_k(s) * eps``: keeping ``noise`` for a whole episode keeps its mode even
        when a learned prior moves with the state. ``noise=None`` decodes the prior mean, which on a
        multimodal task lies between the modes.
        """
        features = self.obs_encoder(obs)
        prior = self.prior_params(features)
        if noise is None:
            z = prior.mean()
        elif self.config.prior == "mixture":
            z = prior.sample(noise)
        else:
            z = prior.mu[:, 0] + (0.5 * prior.logvar[:, 0]).exp() * noise
        return self.decode(features, z)
