"""Conditional VAE over actions for multimodal behaviour cloning (Sohn et al. 2015; robomimic's BC-VAE).

q(z | s, a) encodes which mode a demonstrated action (chunk) is in, p(a | s, z) decodes the action
for that mode, and the prior is N(0, I) or a learned p(z | s). Training minimises
``-log p(a | s, z) + beta * KL(q(z | s, a) || p(z | s))`` with ``z ~ q``; at test time ``z`` comes
from the prior, so a policy that keeps one ``z`` for a whole episode commits to one mode.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import NamedTuple

import torch
from torch import nn

from vaerl.models.bc.base import PolicyLoss
from vaerl.models.bc.heads import make_action_head
from vaerl.models.bc.observations import ObservationEncoder
from vaerl.models.blocks import NATURE_LAYERS, mlp
from vaerl.models.vae import gaussian_kl, reparameterize

LOGVAR_RANGE = (-12.0, 8.0)


# ---------------------------------------------------------------------------------------------- math
def gaussian_kl_between(
    mu_q: torch.Tensor, logvar_q: torch.Tensor, mu_p: torch.Tensor, logvar_p: torch.Tensor
) -> torch.Tensor:
    """KL(N(mu_q, exp(logvar_q)) || N(mu_p, exp(logvar_p))) per dimension, closed form."""
    return 0.5 * (logvar_p - logvar_q + (logvar_q.exp() + (mu_q - mu_p).pow(2)) / logvar_p.exp() - 1.0)



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
