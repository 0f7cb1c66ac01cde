"""VQ-VAE (van den Oord et al. 2017): a conv encoder onto a grid of vectors, each snapped to its nearest code.

Gradients pass the quantiser with the straight-through estimator. The codebook learns either from
the codebook loss ``||sg[z_e] - e||^2`` or from exponential moving averages of the assigned encoder
outputs (the paper's appendix; no codebook loss then). Codes that fall out of use are restarted on
recent encoder outputs, so the codebook does not collapse onto a few entries.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from gymnasium import spaces
from torch import nn

from vaerl.models.base import FrameModel, LatentAxes, LossOutput
from vaerl.models.blocks import ConvDecoderTrunk, ConvEncoderTrunk, as_layers, conv_output_sizes


@dataclass
class VQVAEConfig:
    input_shape: tuple[int, int, int] = (1, 84, 84)
    """(channels, height, width) of the encoder input."""
    encoder_layers: list[list[int]] = field(
        default_factory=lambda: [[32, 8, 4, 2], [64, 4, 2, 1], [64, 3, 1, 1]]
    )
    """Conv layers as [channels, kernel, stride, padding]; 84x84 -> a 10x10 grid by default."""
    embedding_dim: int = 8
    num_codes: int = 256
    commitment: float = 0.25
    """Weight of the commitment loss ||z_e - sg[e]||^2 (beta in the paper)."""
    ema: bool = True
    """Learn the codebook by exponential moving averages instead of the codebook loss."""
    decay: float = 0.99
    dead_code_threshold: float = 0.5
    """Codes whose EMA usage (assignments per batch) drops below this are restarted."""
    kmeans_init: bool = False
    """Initialise the codebook by k-means on the first training batch."""
    decoder_width: int = 1
    sigma: float = 0.1
    """Standard deviation of the Gaussian likelihood used for the reconstruction term."""

    def __post_init__(self) -> None:
        self.input_shape = tuple(int(v) for v in self.input_shape)  # type: ignore[assignment]
        if not 0.0 < self.decay < 1.0:
            raise ValueError(f"decay must lie in (0, 1), got {self.decay}")


class QuantizerOutput(NamedTuple):
    quantized: torch.Tensor  # (N, D, H, W), straight-through: forward = codes, backward = identity
    indices: torch.Tensor  # (N, H, W) long
    codebook_loss: torch.Tensor
    commitment_loss: torch.Tensor
    perplexity: torch.Tensor
    usage: torch.Tensor  # fraction of codes used in this batch


def perplexity_of(indices: torch.Tensor, num_codes: int) -> torch.Tensor:
    """exp(entropy) of the empirical code distribution: 1 = one code used, num_codes = uniform use."""
    probs = torch.bincount(indices.flatten(), minlength=num_codes).float()
    probs = probs / probs.sum().clamp(min=1)
    entropy = -(probs * torch.log(probs.clamp(min=1e-10))).sum()
    return entropy.exp()


def kmeans(vectors: torch.Tensor, k: int, iters: int = 10, generator: torch.Generator | None = None) -> torch.Tensor:
    """Plain k-means (Lloyd) on ``(N, D)`` vectors; returns ``(k, D)`` centroids."""
    pick = torch.randint(0, vectors.shape[0], (k,), generator=generator, device=vectors.device)
    centroids = vectors[pick].clone()
    for _ in range(iters):
        assign = torch.cdist(vectors, centroids).argmin(1)
        sums = torch.zeros_like(centroids).index_add_(0, assign, vectors)
        counts = torch.bincount(assign, minlength=k).unsqueeze(1)
        centroids = torch.where(counts > 0, sums / counts.clamp(min=1), centroids)
    return centroids


class VectorQuantizer(nn.Module):
    """Nearest-code lookup with straight-through gradients, EMA updates and dead-code restart."""

    def __init__(
        self,
        num_codes: int,
        dim: int,
        ema: bool = True,
        decay: float = 0.99,
        dead_code_threshold: float = 0.5,
        kmeans_init: bool = False,
        eps: float = 1e-5,
    ) -> None:
        super().__init__()
        self.num_codes, self.dim = num_codes, dim
        self.ema, self.decay, self.eps = ema, decay, eps
        self.dead_code_threshold = dead_code_threshold
        embed = torch.randn(num_codes, dim) * (1.0 / math.sqrt(dim))
        self.codebook = nn.Parameter(embed, requires_grad=not ema)
        self.register_buffer("cluster_size", torch.ones(num_codes))
        self.register_buffer("embed_sum", embed.clone())
        self.register_buffer("initialised", torch.tensor(not kmeans_init))

    def lookup(self, indices: torch.Tensor) -> torch.Tensor:
        """Code vectors for ``indices`` of shape ``(N, H, W)`` as a grid ``(N, D, H, W)``."""
        return F.embedding(indices, self.codebook).permute(0, 3, 1, 2)

    def nearest(self, flat: torch.Tensor) -> torch.Tensor:
        """Index of the nearest code (squared Euclidean) for each row of ``flat`` ``(M, D)``."""
        distances = (
            flat.pow(2).sum(1, keepdim=True)
            - 2 * flat @ self.codebook.t()
            + self.codebook.pow(2).sum(1)[None, :]
        )
        return distances.argmin(1)

    def forward(self, z_e: torch.Tensor) -> QuantizerOutput:
        n, d, h, w = z_e.shape
        flat = z_e.permute(0, 2, 3, 1).reshape(-1, d)  # (N*H*W, D)

        if self.training and not bool(self.initialised):
            self._kmeans_init(flat.detach())

        # nearest code for every grid vector
        indices = self.nearest(flat.detach())
        codes = F.embedding(indices, self.codebook)

        # codebook learning: EMA of assigned vectors, or the codebook loss
        if self.training and self.ema:
            self._ema_update(flat.detach(), indices)
            codes = F.embedding(indices, self.codebook)
        codebook_loss = F.mse_loss(codes, flat.detach()) if not self.ema else flat.new_zeros(())
        commitment_loss = F.mse_loss(flat, codes.detach())

        if self.training:
            self._restart_dead_codes(flat.detach())

        # straight-through: the forward pass uses codes, the backward pass copies gradients to z_e
        quantized = flat + (codes - flat).detach()
        quantized = quantized.view(n, h, w, d).permute(0, 3, 1, 2)
        indices = indices.view(n, h, w)
        usage = (torch.bincount(indices.flatten(), minlength=self.num_codes) > 0).float().mean()
        return QuantizerOutput(
            quantized, indices, codebook_loss, commitment_loss, perplexity_of(indices, self.num_codes), usage
        )

    @torch.no_grad()
    def _kmeans_init(self, flat: torch.Tensor) -> None:
        centroids = kmeans(flat, self.num_codes)
        self.codebook.data.copy_(centroids)
        self.embed_sum.copy_(centroids)
        self.cluster_size.fill_(1.0)
        self.initialised.fill_(True)

    @torch.no_grad()
    def _ema_update(self, flat: torch.Tensor, indices: torch.Tensor) -> None:
        one_hot = F.one_hot(indices, self.num_codes).type(flat.dtype)  # (M, K)
        self.cluster_size.mul_(self.decay).add_(one_hot.sum(0), alpha=1 - self.decay)
        self.embed_sum.mul_(self.decay).add_(one_hot.t() @ flat, alpha=1 - self.decay)
        # Laplace smoothing keeps rarely used codes from dividing by ~0
        total = self.cluster_size.sum()
        smoothed = (self.cluster_size + self.eps) / (total + self.num_codes * self.eps) * total
        self.codebook.data.copy_(self.embed_sum / smoothed.unsqueeze(1))

    @torch.no_grad()
    def _restart_dead_codes(self, flat: torch.Tensor) -> None:
        dead = self.cluster_size < self.dead_code_threshold
        n_dead = int(dead.sum())
        if n_dead == 0:
            return
        picks = flat[torch.randint(0, flat.shape[0], (n_dead,), device=flat.device)]
        self.codebook.data[dead] = picks
        self.embed_sum[dead] = picks
        self.cluster_size[dead] = 1.0


class VQVAE(FrameModel):
    kind = "vqvae"
    config_class = VQVAEConfig
    latent_modes = ("mean", "sample", "indices")  # the posterior is deterministic: a sample is the mean

    def __init__(self, config: VQVAEConfig) -> None:
        super().__init__(config)
        channels, height, width = config.input_shape
        layers = as_layers(config.encoder_layers)
        sizes = conv_output_sizes((height, width), layers)
        self.grid_size = sizes[-1]
        trunk = ConvEncoderTrunk(channels, layers)
        self.encoder = nn.Sequential(trunk, nn.Conv2d(trunk.out_channels, config.embedding_dim, 1))
        self.quantizer = VectorQuantizer(
            config.num_codes, config.embedding_dim, config.ema, config.decay,
            config.dead_code_threshold, config.kmeans_init,
        )
        dec_channels = trunk.out_channels * config.decoder_width
        self.decoder = nn.Sequential(
            nn.Conv2d(config.embedding_dim, dec_channels, 3, padding=1), nn.ReLU(inplace=True),
            ConvDecoderTrunk(dec_channels, channels, layers, sizes, config.decoder_width),
        )

    def encode(self, x: torch.Tensor) -> QuantizerOutput:
        return self.quantizer(self.encoder(x))

    def decode(self, quantized: torch.Tensor) -> torch.Tensor:
        """Decoder mean in [0, 1] for a quantised grid ``(N, D, H, W)``."""
        return torch.sigmoid(self.decoder(quantized))

    def decode_indices(self, indices: torch.Tensor) -> torch.Tensor:
        """Decoder mean for a grid of code indices ``(N, H, W)``."""
        return self.decode(self.quantizer.lookup(indices))

    # ------------------------------------------------------------------ the latent contract
    def latent_shape(self, mode: str = "mean") -> tuple[int, ...]:
        """``(h, w)`` code indices, or the quantised grid ``(D, h, w)`` of code vectors."""
        self.check_mode(mode)
        return tuple(self.grid_size) if mode == "indices" else (self.config.embedding_dim, *self.grid_size)

    def latent_space(self, mode: str = "mean") -> spaces.Space:
        if mode == "indices":
            return spaces.MultiDiscrete(np.full(self.latent_dim(mode), self.config.num_codes, dtype=np.int64))
        return super().latent_space(mode)

    def encode_latent(self, x: torch.Tensor, mode: str = "mean", *,
                      generator: torch.Generator | None = None) -> torch.Tensor:
        """The quantised grid (``mean`` and ``sample``) or the code indices, flattened."""
        self.check_mode(mode)
        q = self.encode(x)
        return (q.indices if mode == "indices" else q.quantized).flatten(1)

    def decode_latent(self, latents: torch.Tensor, mode: str = "mean") -> torch.Tensor:
        grid = (-1, *self.latent_shape(mode))
        if mode == "indices":
            return self.decode_indices(latents.long().view(grid))
        return self.decode(latents.float().view(grid))

    @property
    def codebook(self) -> torch.Tensor:
        return self.quantizer.codebook

    def describe_latent(self) -> str:
        height, width = self.grid_size
        return f"{height}x{width}x{self.config.embedding_dim} grid"

    def latent_axes(self, x: torch.Tensor, limit: int) -> LatentAxes:
        """The channels of the code vectors, in order."""
        return LatentAxes("code-vector channels", list(range(min(limit, self.config.embedding_dim))), {})

    def traverse(self, latent: torch.Tensor, dim: int, values: torch.Tensor) -> torch.Tensor:
        """Shift code-vector channel ``dim`` over the whole grid by ``values`` times its spread in the codebook."""
        spread = self.quantizer.codebook.std(0)  # (D,): how far codes differ along each channel
        grid = latent.view(self.latent_shape("mean")).repeat(len(values), 1, 1, 1)
        grid[:, dim] += (values * spread[dim])[:, None, None]
        return grid.flatten(1)

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x).quantized)

    def training_loss(self, x: torch.Tensor, pixel_weights: torch.Tensor | None = None, step: int = 0) -> LossOutput:
        q = self.encode(x)
        recon = self.decode(q.quantized)
        sq_err = (recon - x).pow(2) / (2 * self.config.sigma**2)
        weighted = sq_err * pixel_weights if pixel_weights is not None else sq_err
        recon_term = weighted.flatten(1).sum(1).mean()
        # the codebook/commitment terms are per element; scale them like the per-frame reconstruction sum
        grid_elems = q.quantized[0].numel()
        loss = recon_term + grid_elems * (q.codebook_loss + self.config.commitment * q.commitment_loss)
        metrics = {
            "recon_mse": (recon.detach() - x).pow(2).mean(),
            "codebook_loss": q.codebook_loss.detach(),
            "commitment_loss": q.commitment_loss.detach(),
            "perplexity": q.perplexity,
            "codebook_usage": q.usage,
        }
        return LossOutput(loss, recon, metrics)

