"""Variational autoencoder (Kingma & Welling 2014) with the beta-VAE knob (Higgins et al. 2017).

ELBO = E_q[log p(x|z)] - KL(q(z|x) || N(0, I)). Training minimises
``sum_pixels(w * nll) + beta_t * KL`` where ``w`` are optional pixel weights (see
:mod:`vaerl.training.weighting`) and ``beta_t`` ramps up over ``kl_warmup_steps``; the reported ELBO
is always the unweighted one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from vaerl.models.base import CellLayout, FrameModel, LatentAxes, LossOutput, ProjectionLayout
from vaerl.models.blocks import (
    HALF_NATURE_LAYERS,
    ConvDecoderTrunk,
    ConvEncoderTrunk,
    as_layers,
    conv_output_sizes,
)
from vaerl.models.contrast import GlobalLocalContrast
from vaerl.models.dynamics import InverseDynamics
from vaerl.models.objects import (
    CELL_KERNELS,
    PART_STATS,
    ForegroundProjections,
    ObjectEncoder,
    ObjectProjections,
    ObjectRenderer,
)

LIKELIHOODS = ("bernoulli", "gaussian")

PLAIN_VAE_BEFORE_DEFAULTS: dict[str, Any] = {
    "foreground_projections": False, "foreground_parts": 0, "foreground_cells": 0, "foreground_sums": True,
    "foreground_cell_kernel": "box", "foreground_cells_signed": False}
"""What the VAE's later settings were before each existed: checkpoints written earlier lack the key."""


@dataclass
class VAEConfig:
    input_shape: tuple[int, int, int] = (1, 84, 84)
    """(channels, height, width) of the encoder input."""
    latent_dim: int = 32
    encoder_layers: list[list[int]] = field(default_factory=lambda: [list(layer) for layer in HALF_NATURE_LAYERS])
    """Conv layers as [channels, kernel, stride, padding]; the decoder mirrors them."""
    hidden_dim: int = 256
    """Width of the fully connected layer between conv features and the latent (0: none)."""
    decoder_width: int = 2
    """Channel multiplier of the decoder (reconstruction quality without slowing the encoder)."""
    likelihood: str = "bernoulli"
    """``bernoulli`` (binary cross-entropy on [0, 1] intensities) or ``gaussian`` (fixed sigma)."""
    sigma: float = 0.1
    """Standard deviation of the Gaussian likelihood."""
    beta: float = 1.0
    """Weight of the KL term (beta-VAE)."""
    free_bits: float = 0.0
    """Minimum KL per latent dimension in nats (Kingma et al. 2016); 0 disables."""
    kl_warmup_steps: int = 0
    """Steps over which the KL weight ramps linearly from 0 to beta."""
    contrast_weight: float = 0.0
    """Weight of a contrastive term beside the ELBO (:mod:`vaerl.models.contrast`, the global-local term of Deep
    InfoMax and ST-DIM): the posterior mean of a frame must pick out, at each place of an encoder feature map,
    the features of the frame ``contrast_offset`` steps later in its episode among the other frames of the
    batch. It puts where things are into the Gaussian part, which the reconstruction leaves to the cells. 0: off."""
    contrast_offset: int = 0
    """Steps between the two frames of the contrastive term: 0 contrasts a frame with itself, 1 with the next
    (ST-DIM's temporal form; pretraining then draws frames in pairs from one episode)."""
    contrast_layer: int = -1
    """Which conv layer's feature map the partner frame is picked out by (``-1``: the last; ``0``: the first,
    whose places are finest)."""
    inverse_dynamics_weight: float = 0.0
    """Weight of an inverse-dynamics term beside the ELBO (:mod:`vaerl.models.dynamics`): from the posterior means
    of a frame and the next one in its episode, a linear predictor must tell which action was taken between them,
    so that what the agent controls (its paddle) is in the Gaussian part, not only in the cells. Pretraining then
    draws frames in pairs one step apart with their actions. 0: off."""
    num_actions: int = 0
    """Actions of the env's ``Discrete`` action space, for the inverse-dynamics term (pretraining sets it from the
    env); 0 without the term."""
    object_dropout: float = 0.0
    """Fraction of training frames whose decoder gets an empty object path, so that the Gaussian part has to draw
    those frames' objects itself: the cells alone would carry them, and the reconstruction would then ask the
    Gaussian part for nothing about where things are. The latent is unchanged. 0: off."""
    frame_stack: int = 1
    """Frames stacked along the input's channels (pretraining sets it from the preprocessing). The object path
    reads the latest of them, so the cells say where things are now; the Gaussian part sees them all, and as the
    decoder draws the earlier frames too, what moved in between is left to it."""
    object_channels: int = 0
    """Learned object channels beside the Gaussian latent (:class:`vaerl.models.objects.ObjectEncoder`)."""
    foreground_projections: bool = True
    """The foreground path beside the Gaussian latent: fixed sums of the frame's foreground, by default over a
    grid of cells (:class:`vaerl.models.objects.ForegroundProjections`). ``false`` gives the plain VAE, and
    the ``foreground_*`` settings below then do not apply (the cells are set to none)."""
    foreground_parts: int = 0
    """Learned parts of the foreground, each handed on as its mass, centre and spread (5 numbers); needs
    ``foreground_projections``."""
    foreground_cells: int = 14
    """Sums of the foreground over a ``G x G`` grid of cells (``G * G`` numbers): where each thing is, and
    which column goes with which row. 0: none."""
    foreground_sums: bool = False
    """The foreground's row and column sums (``H + W`` numbers); ``false`` keeps only its cells (and parts)."""
    foreground_cell_kernel: str = "tent"
    """How a pixel goes to the cells: ``box`` (into its one cell) or ``tent`` (split between the nearest
    cell centres, so the cells keep places to a fraction of a pixel); see
    :func:`vaerl.models.objects.cell_assignment`."""
    foreground_cells_signed: bool = True
    """Cells of the frame minus its background instead of its distance from it: an object adds its intensity
    to its cells in front of anything, also in front of a brighter background (see
    :class:`vaerl.models.objects.ForegroundProjections`). Only where there are cells."""

    def __post_init__(self) -> None:
        self.input_shape = tuple(int(v) for v in self.input_shape)  # type: ignore[assignment]
        # the cells are on by default: without the foreground path there are none, and without cells
        # nothing is summed signed, so ``foreground_projections=false`` alone is the plain VAE and
        # ``foreground_cells=0 foreground_sums=true`` alone the row and column sums
        if not self.foreground_projections:
            self.foreground_cells = 0
        if not self.foreground_cells:
            self.foreground_cells_signed = False
        if self.likelihood not in LIKELIHOODS:
            raise ValueError(f"likelihood must be one of {LIKELIHOODS}, got {self.likelihood!r}")
        if self.latent_dim < 1:
            raise ValueError(f"latent_dim must be >= 1, got {self.latent_dim}")
        if self.frame_stack < 1 or self.input_shape[0] % self.frame_stack:
            raise ValueError(f"frame_stack must be >= 1 and divide the input's {self.input_shape[0]} channels, "
                             f"got {self.frame_stack}")
        if self.contrast_weight < 0:
            raise ValueError(f"contrast_weight must be >= 0, got {self.contrast_weight}")
        if self.contrast_offset < 0:
            raise ValueError(f"contrast_offset must be >= 0 (steps ahead in the episode), got {self.contrast_offset}")
        if not -len(self.encoder_layers) <= self.contrast_layer < len(self.encoder_layers):
            raise ValueError(f"contrast_layer must name one of the {len(self.encoder_layers)} conv layers (0 to "
                             f"{len(self.encoder_layers) - 1}, or -1 for the last), got {self.contrast_layer}")
        if self.inverse_dynamics_weight < 0:
            raise ValueError(f"inverse_dynamics_weight must be >= 0, got {self.inverse_dynamics_weight}")
        if self.inverse_dynamics_weight and self.num_actions < 2:
            raise ValueError(f"the inverse-dynamics term predicts one of the env's actions and needs num_actions >= 2, "
                             f"got {self.num_actions}: pretraining sets it from a Discrete action space")
        if self.inverse_dynamics_weight and self.contrast_weight and self.contrast_offset > 1:
            raise ValueError(f"the inverse-dynamics term trains on frames one step apart and the contrastive term on "
                             f"frames {self.contrast_offset} apart; pretraining draws one kind of pair: set "
                             "model.contrast_offset to 0 or 1, or model.inverse_dynamics_weight=0")
        if self.object_channels < 0:
            raise ValueError(f"object_channels must be >= 0, got {self.object_channels}")
        if not 0 <= self.object_dropout < 1:
            raise ValueError(f"object_dropout is a fraction of frames, 0 <= object_dropout < 1, got {self.object_dropout}")
        if self.object_dropout and not (self.object_channels or self.foreground_projections):
            raise ValueError("object_dropout hides the object path from the decoder, and this VAE has none; set "
                             "foreground_projections=true or object_dropout=0")
        if self.object_channels and self.foreground_projections:
            raise ValueError("object_channels and foreground_projections are two object paths; choose one "
                             "(object_channels=0 or foreground_projections=false)")
        if self.foreground_parts < 0:
            raise ValueError(f"foreground_parts must be >= 0, got {self.foreground_parts}")
        if self.foreground_parts and not self.foreground_projections:
            raise ValueError("foreground_parts split the foreground projections into parts; set "
                             "foreground_projections=true or foreground_parts=0")
        if not 0 <= self.foreground_cells <= min(self.input_shape[1:]):
            raise ValueError(f"foreground_cells must be between 0 and the frame's smaller side "
                             f"({min(self.input_shape[1:])}), got {self.foreground_cells}")
        if self.foreground_cell_kernel not in CELL_KERNELS:
            raise ValueError(f"foreground_cell_kernel must be one of {CELL_KERNELS}, got {self.foreground_cell_kernel!r}")
        if self.foreground_projections and not (self.foreground_sums or self.foreground_cells or self.foreground_parts):
            raise ValueError("foreground_sums=false leaves the foreground path empty; set foreground_cells > 0 "
                             "(or foreground_parts > 0), foreground_sums=true, or foreground_projections=false")


class VAEOutput(NamedTuple):
    recon: torch.Tensor  # decoder mean in [0, 1]
    logits: torch.Tensor  # decoder output before the sigmoid
    z: torch.Tensor
    mu: torch.Tensor
    logvar: torch.Tensor


def gaussian_kl(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, exp(logvar)) || N(0, I)) per dimension, closed form."""
    return 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar)


def reparameterize(mu: torch.Tensor, logvar: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """z = mu + sigma * eps, differentiable in mu and logvar; ``generator`` seeds eps."""
    if generator is None:
        eps = torch.randn_like(mu)
    else:
        eps = torch.randn(mu.shape, generator=generator, device=mu.device, dtype=mu.dtype)
    return mu + eps * torch.exp(0.5 * logvar)


class VAE(FrameModel):
    kind = "vae"
    config_class = VAEConfig
    latent_modes = ("mean", "sample")
    can_sample_prior = True

    @classmethod
    def stored_config(cls, config: dict[str, Any]) -> dict[str, Any]:
        # a checkpoint stores every setting its vaerl had; the ones it lacks were added later, and what it
        # was built with is their setting before it became a default
        return {**PLAIN_VAE_BEFORE_DEFAULTS, **config}

    def __init__(self, config: VAEConfig) -> None:
        super().__init__(config)
        channels, height, width = config.input_shape
        layers = as_layers(config.encoder_layers)
        sizes = conv_output_sizes((height, width), layers)
        self.trunk = ConvEncoderTrunk(channels, layers)
        self.grid_shape = (self.trunk.out_channels, *sizes[-1])
        flat = math.prod(self.grid_shape)
        hidden = config.hidden_dim
        self.to_hidden = nn.Sequential(nn.Linear(flat, hidden), nn.ReLU(inplace=True)) if hidden else nn.Identity()
        self.to_posterior = nn.Linear(hidden or flat, 2 * config.latent_dim)

        dec_grid = (self.grid_shape[0] * config.decoder_width, *self.grid_shape[1:])
        self.dec_grid = dec_grid
        self.from_latent = nn.Sequential(
            nn.Linear(config.latent_dim, hidden or math.prod(dec_grid)), nn.ReLU(inplace=True),
            *([nn.Linear(hidden, math.prod(dec_grid)), nn.ReLU(inplace=True)] if hidden else []),
        )
        self.decoder = ConvDecoderTrunk(dec_grid[0], channels, layers, sizes, config.decoder_width)

        # the deterministic object path (vaerl.models.objects): projections in, rendered maps out
        self.object_encoder: ObjectEncoder | ForegroundProjections | None = None
        self.object_renderer: ObjectRenderer | None = None
        self.frame_channels = channels // config.frame_stack  # the latest frame's, which the object path reads
        if config.object_channels:
            self.object_encoder = ObjectEncoder(self.frame_channels, (height, width), config.object_channels)
        elif config.foreground_projections:
            self.object_encoder = ForegroundProjections(self.frame_channels, (height, width),
                                                        num_parts=config.foreground_parts,
                                                        cells=config.foreground_cells, sums=config.foreground_sums,
                                                        cell_kernel=config.foreground_cell_kernel,
                                                        signed_cells=config.foreground_cells_signed)
        if self.object_encoder is not None:
            self.object_renderer = ObjectRenderer(self.object_encoder.map_channels, channels, (height, width))
        self.contrast: GlobalLocalContrast | None = None
        self.contrast_layer = config.contrast_layer % len(layers)  # the conv layer whose map the term reads
        if config.contrast_weight:
            self.contrast = GlobalLocalContrast(config.latent_dim,
                                                (layers[self.contrast_layer][0], *sizes[self.contrast_layer + 1]))
        self.inverse_dynamics: InverseDynamics | None = None
        if config.inverse_dynamics_weight:
            self.inverse_dynamics = InverseDynamics(config.latent_dim, config.num_actions)

    @property
    def pair_offset(self) -> int:
        """Frames come in pairs one step apart for the inverse-dynamics term, ``contrast_offset`` steps apart for a
        temporal contrastive term (0: no pairs)."""
        if self.inverse_dynamics is not None:
            return 1
        return self.config.contrast_offset if self.contrast is not None else 0

    @property
    def num_actions(self) -> int:
        """The env's actions with the inverse-dynamics term, which reads them; 0 without it."""
        return self.config.num_actions if self.inverse_dynamics is not None else 0

    # ------------------------------------------------------------------ the four VAE pieces
    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """q(z|x): mean and log-variance ``(N, latent_dim)`` each."""
        return self.posterior(self.trunk(x))

    def posterior(self, feature_map: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """q(z|x) from the encoder trunk's last feature map."""
        h = self.to_hidden(feature_map.flatten(1))
        mu, logvar = self.to_posterior(h).chunk(2, dim=-1)
        return mu, logvar.clamp(-12.0, 8.0)

    def encode_objects(self, x: torch.Tensor) -> ObjectProjections | None:
        """The object path's projections (and part statistics) of the latest frame, ``None`` without an object path."""
        return self.object_encoder(x[:, -self.frame_channels:]) if self.object_encoder is not None else None

    def decode_logits(self, z: torch.Tensor, objects: ObjectProjections | None = None,
                      objects_shown: torch.Tensor | None = None) -> torch.Tensor:
        """Decoder output before the output nonlinearity, shaped like the input. ``objects_shown`` (``(N,)``, 0 or
        1) hides the objects of the frames marked 0 from the renderer: it draws an empty scene for them."""
        h = self.from_latent(z).view(-1, *self.dec_grid)
        logits = self.decoder(h)
        if self.object_renderer is not None:
            encoder = self.object_encoder
            if objects is None:  # no objects given: an empty scene (prior samples)
                objects = ObjectProjections.zeros(len(z), encoder.channels, encoder.grid, z,  # type: ignore[union-attr]
                                                  num_parts=encoder.num_parts,  # type: ignore[union-attr]
                                                  cells=encoder.cells)  # type: ignore[union-attr]
            maps = encoder.maps(objects)  # type: ignore[union-attr]
            if objects_shown is not None:
                maps = maps * objects_shown.view(-1, *[1] * (maps.dim() - 1)).to(maps)
            logits = logits + self.object_renderer(maps)
        return logits

    def decode(self, latent: torch.Tensor) -> torch.Tensor:
        """Mean of p(x|latent) in [0, 1] for a flat latent (z, then any object projections); frames shown are
        always this mean, never a sample."""
        z, objects = self.split_latent(latent)
        return torch.sigmoid(self.decode_logits(z, objects))

    def set_background(self, background: torch.Tensor) -> None:
        """The static background of a frame stack ``(C * frame_stack, H, W)``; the object path keeps the latest frame's."""
        if self.object_encoder is not None:
            latest = background[-self.frame_channels:]
            self.object_encoder.background.copy_(latest.to(self.object_encoder.background))

    def split_latent(self, latent: torch.Tensor) -> tuple[torch.Tensor, ObjectProjections | None]:
        """A flat latent -> the Gaussian part and, with an object path, its projections (and part statistics)."""
        z = latent[:, : self.config.latent_dim]
        if self.object_encoder is None:
            return z, None
        encoder = self.object_encoder
        return z, ObjectProjections.unflatten(latent[:, self.config.latent_dim:], encoder.channels, encoder.grid,
                                              num_parts=encoder.num_parts, cells=encoder.cells)

    def forward(self, x: torch.Tensor, sample: bool = True) -> VAEOutput:
        return self.forward_with_map(x, sample)[0]

    def forward_with_map(self, x: torch.Tensor, sample: bool = True,
                         objects_shown: torch.Tensor | None = None) -> tuple[VAEOutput, torch.Tensor]:
        """:meth:`forward`, and the encoder trunk's last feature map it went through."""
        feature_map = self.trunk(x)
        mu, logvar = self.posterior(feature_map)
        z = reparameterize(mu, logvar) if sample else mu
        logits = self.decode_logits(z, self.encode_objects(x), objects_shown)
        return VAEOutput(torch.sigmoid(logits), logits, z, mu, logvar), feature_map

    # ------------------------------------------------------------------ the latent contract
    def latent_shape(self, mode: str = "mean") -> tuple[int, ...]:
        self.check_mode(mode)
        objects = self.object_encoder.latent_dim if self.object_encoder is not None else 0
        return (self.config.latent_dim + objects,)

    def encode_latent(self, x: torch.Tensor, mode: str = "mean", *,
                      generator: torch.Generator | None = None) -> torch.Tensor:
        """Posterior mean, or a reparameterised sample (``mode="sample"``, seeded by ``generator``)."""
        self.check_mode(mode)
        mu, logvar = self.encode(x)
        z = reparameterize(mu, logvar, generator) if mode == "sample" else mu
        objects = self.encode_objects(x)  # deterministic: the same in both modes
        return z if objects is None else torch.cat([z, objects.flatten()], dim=1)

    def decode_latent(self, latents: torch.Tensor, mode: str = "mean") -> torch.Tensor:
        self.check_mode(mode)
        return self.decode(latents.float())

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward(x, sample=False).recon

    @torch.no_grad()
    def sample_prior(self, n: int, *, generator: torch.Generator | None = None) -> torch.Tensor:
        """Decoder means of ``n`` prior samples z ~ N(0, I) (object channels have no prior: none fire)."""
        device = next(self.parameters()).device
        z = torch.randn(n, self.config.latent_dim, generator=generator, device=device)
        return torch.sigmoid(self.decode_logits(z))

    def describe_latent(self) -> str:
        if self.object_encoder is None:
            return super().describe_latent()
        encoder = self.object_encoder
        height, width = encoder.grid
        pieces = [f"{self.config.latent_dim}-d"]
        if width + height:
            pieces.append(f"{encoder.channels}x({width}+{height}) {encoder.name} projections")
        if encoder.num_parts:
            pieces.append(f"{encoder.num_parts}x{PART_STATS} part statistics")
        if encoder.cells:
            kernel = "" if encoder.cell_kernel == "box" else f" {encoder.cell_kernel}"  # type: ignore[union-attr]
            signed = " signed" if encoder.signed_cells else ""  # type: ignore[union-attr]
            pieces.append(f"{encoder.cells}x{encoder.cells}{kernel}{signed} {encoder.name} cells")
        return " + ".join(pieces)

    def projections(self) -> ProjectionLayout | None:
        """The object path's column and row projections, right after the Gaussian part."""
        encoder = self.object_encoder
        if encoder is None or not sum(encoder.grid):
            return None
        height, width = encoder.grid
        return ProjectionLayout(self.config.latent_dim, encoder.channels, width, height, self.latent_dim("mean"))

    def cells(self) -> CellLayout | None:
        """The object path's grid of cells, the last numbers of the latent."""
        encoder = self.object_encoder
        if encoder is None or not encoder.cells:
            return None
        size = self.latent_dim("mean")
        return CellLayout(size - encoder.cells**2, encoder.cells, size, encoder.signed_cells)  # type: ignore[union-attr]

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """Decoder means of ``n`` prior samples (the same as :meth:`sample_prior`)."""
        return self.sample_prior(n, generator=generator)

    @property
    def num_axes(self) -> int:
        """The Gaussian dimensions; object projections are measurements of the frame, not axes to sweep."""
        return self.config.latent_dim

    @torch.no_grad()
    def kl_per_dimension(self, x: torch.Tensor) -> torch.Tensor:
        """Mean KL(q(z_d|x) || N(0, 1)) of each latent dimension over frames ``x``."""
        mu, logvar = self.encode(x)
        return gaussian_kl(mu, logvar).mean(0)

    def latent_axes(self, x: torch.Tensor, limit: int) -> LatentAxes:
        """The dimensions the model uses most (highest KL to the prior on ``x``) first."""
        kl = self.kl_per_dimension(x)
        dims = torch.argsort(kl, descending=True)[:limit].tolist()
        return LatentAxes("latent dimensions by KL", dims,
                          {"kl": [float(kl[d]) for d in dims], "active_dims": int((kl > 0.01).sum())})

    def pixel_nll(self, logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """-log p(x|z) per pixel in nats."""
        if self.config.likelihood == "bernoulli":
            return F.binary_cross_entropy_with_logits(logits, x, reduction="none")
        sigma = self.config.sigma
        return 0.5 * ((x - torch.sigmoid(logits)) / sigma) ** 2 + math.log(sigma) + 0.5 * math.log(2 * math.pi)

    def kl_weight(self, step: int) -> float:
        warmup = self.config.kl_warmup_steps
        return self.config.beta * (min(1.0, step / warmup) if warmup > 0 else 1.0)

    def training_loss(self, x: torch.Tensor, pixel_weights: torch.Tensor | None = None, step: int = 0,
                      paired: bool = False, actions: torch.Tensor | None = None) -> LossOutput:
        out, feature_map = self.forward_with_map(x, objects_shown=self.objects_shown(len(x)))
        nll = self.pixel_nll(out.logits, x)
        kl_per_dim = gaussian_kl(out.mu, out.logvar)

        # what the optimiser sees: weighted reconstruction + annealed, free-bits-clamped KL
        weighted_nll = (nll * pixel_weights).flatten(1).sum(1).mean() if pixel_weights is not None else None
        recon_term = weighted_nll if weighted_nll is not None else nll.flatten(1).sum(1).mean()
        kl_dims = kl_per_dim.mean(0)
        if self.config.free_bits > 0:
            kl_dims = kl_dims.clamp(min=self.config.free_bits)
        loss = recon_term + self.kl_weight(step) * kl_dims.sum()
        contrast = self.contrast_term(x, out.mu, feature_map, paired)
        if contrast is not None:
            loss = loss + self.config.contrast_weight * contrast[0]
        dynamics = self.inverse_dynamics_term(out.mu, paired, actions)
        if dynamics is not None:
            loss = loss + self.config.inverse_dynamics_weight * dynamics[0]

        # what we report: the true (unweighted) ELBO per frame
        nll_frame = nll.detach().flatten(1).sum(1).mean()
        kl_frame = kl_per_dim.detach().sum(1).mean()
        metrics = {
            "recon_nll": nll_frame,
            "kl": kl_frame,
            "elbo": -(nll_frame + kl_frame),
            "bits_per_dim": self.bits_per_dim(nll_frame + kl_frame, x[0].numel()),
            "kl_weight": torch.tensor(self.kl_weight(step)),
            "active_dims": (kl_per_dim.detach().mean(0) > 0.01).sum().float(),
        }
        if contrast is not None:
            metrics["contrast_nll"], metrics["contrast_accuracy"] = contrast[0].detach(), contrast[1]
        if dynamics is not None:
            metrics["inverse_dynamics_nll"], metrics["inverse_dynamics_accuracy"] = dynamics[0].detach(), dynamics[1]
        return LossOutput(loss, out.recon, metrics)

    def objects_shown(self, n: int) -> torch.Tensor | None:
        """Which of ``n`` training frames the decoder sees the object path of (``None``: all, as in evaluation)."""
        if not (self.training and self.config.object_dropout):
            return None
        device = next(self.parameters()).device
        return (torch.rand(n, device=device) >= self.config.object_dropout).float()

    def contrast_term(self, x: torch.Tensor, mu: torch.Tensor, feature_map: torch.Tensor,
                      paired: bool) -> tuple[torch.Tensor, torch.Tensor] | None:
        """The contrastive loss and accuracy of a batch, ``None`` without the term or without partners.

        ``paired``: the batch holds ``B`` frames, then the frames ``contrast_offset`` steps after each (the
        pretraining loader draws them so); the first half's means are contrasted with the second half's targets. With
        ``contrast_offset=0`` every frame is its own partner: all of an unpaired batch, the first half of a paired one
        (paired for the inverse-dynamics term). Unpaired frames of a temporal term (validation) have none.
        """
        offset = self.config.contrast_offset
        if self.contrast is None or (offset and not paired):
            return None
        if not offset:  # each frame its own partner; of a paired batch only the first half, for its second half
            # holds their next frames, near-copies that a frame would have to be told apart from
            frames = len(mu) // 2 if paired else len(mu)
            anchors, partners, maps = mu[:frames], x[:frames], feature_map[:frames]
        else:
            half = len(mu) // 2
            anchors, partners, maps = mu[:half], x[half:], feature_map[half:]
        if self.contrast_layer == len(self.trunk.layer_ends) - 1:
            return self.contrast(anchors, maps)
        with torch.no_grad():  # the partner's features are a target: the term trains the latent, not them
            partner_maps = self.trunk.up_to(partners, self.contrast_layer)
        return self.contrast(anchors, partner_maps)

    def inverse_dynamics_term(self, mu: torch.Tensor, paired: bool,
                              actions: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor] | None:
        """The inverse-dynamics loss and accuracy of a paired batch (``B`` frames, then the frames one step after
        each, and the ``B`` actions taken from the first ones); ``None`` without the term or without pairs and
        actions (validation)."""
        if self.inverse_dynamics is None or not paired or actions is None:
            return None
        half = len(mu) // 2
        return self.inverse_dynamics(mu[:half], mu[half:], actions)

    def bits_per_dim(self, neg_elbo_nats: torch.Tensor, dims: int) -> torch.Tensor:
        """-ELBO in bits per pixel value.

        For the Gaussian likelihood the density on [0, 1] is turned into one on the 256 discrete
        levels (uniform dequantisation adds log2(256) = 8 bits per value), the usual convention. The
        Bernoulli likelihood on grey levels is a cross-entropy, not a normalised density, so its
        figure is that cross-entropy in bits and only comparable between Bernoulli models.
        """
        bits = neg_elbo_nats / (dims * math.log(2))
        return bits + 8.0 if self.config.likelihood == "gaussian" else bits
