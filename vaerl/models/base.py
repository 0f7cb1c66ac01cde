"""What every vaerl frame model offers to training, checkpoints, wrappers and evaluation.

The *latent contract*: a model encodes frames to a latent in a named mode, decodes it back,
declares the latent's gymnasium space, and says what it can do beyond that (prior samples,
traversal axes). Callers (:class:`~vaerl.Encoder`, the latent wrappers, evaluation, pretraining)
use only this contract, so a new model family is one new file plus an entry in
:data:`vaerl.models.MODEL_REGISTRY`.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, ClassVar, NamedTuple

import numpy as np
import torch
from gymnasium import spaces
from torch import nn

LATENT_MODES: dict[str, str] = {
    "mean": "the deterministic latent (VAE posterior mean, VQ-VAE quantised grid)",
    "sample": "a draw from the posterior (the mean where the posterior is deterministic)",
    "indices": "discrete code indices (VQ-VAE)",
}
"""Every latent mode a model may offer, with what it means."""


class LossOutput(NamedTuple):
    """One training step's result.

    ``loss`` is what the optimiser minimises (it may use pixel weights); ``metrics`` hold scalar
    tensors for logging (unweighted likelihood terms, KL, perplexity, ...); ``recon`` is the
    reconstruction mean in [0, 1].
    """

    loss: torch.Tensor
    recon: torch.Tensor
    metrics: dict[str, torch.Tensor]


class LatentAxes(NamedTuple):
    """The axes a latent traversal sweeps, most informative first (see :meth:`FrameModel.latent_axes`)."""

    description: str
    """What one traversal row shows, e.g. ``latent dimensions by KL``."""
    dims: list[int]
    """Indices along the first axis of ``latent_shape("mean")``."""
    details: dict[str, Any]
    """Family-specific facts behind the choice (VAE: KL of each shown dimension, active dimensions)."""


class ProjectionLayout(NamedTuple):
    """Where a flat ``mean`` latent keeps 1-D projections of the frame (see :meth:`FrameModel.projections`).

    Numbers ``start`` to ``start + channels * (width + height)`` are, per channel, ``width`` column
    projections and then ``height`` row projections: signals along the frame's axes, where the same object
    looks the same at every place. A policy can read them with 1-D convolutions rather than as unordered
    numbers. Everything else in the latent (Gaussian means, part statistics) has no order.
    """

    start: int
    channels: int
    width: int
    height: int
    size: int
    """All numbers of one latent."""

    @property
    def stop(self) -> int:
        return self.start + self.channels * (self.width + self.height)


class CellLayout(NamedTuple):
    """Where a flat ``mean`` latent keeps a ``cells x cells`` grid of the frame (see :meth:`FrameModel.cells`).

    Numbers ``start`` to ``start + cells * cells`` are the grid, row by row: a tiny picture of the frame, in
    which the same object looks the same at every place, so a policy can read it with 2-D convolutions.
    """

    start: int
    cells: int
    size: int
    """All numbers of one latent."""
    signed: bool = False
    """Whether the cells sum the frame minus its background (an object adds to them wherever it is, and they are
    bounded by construction) rather than its distance from it."""

    @property
    def stop(self) -> int:
        return self.start + self.cells * self.cells


class FrameModel(nn.Module):
    """Base class: a generative model of frames with a latent that agents and evaluation can use.

    Subclasses set ``kind`` (the name stored in checkpoints), ``config_class`` (a dataclass of
    constructor keyword arguments with an ``input_shape`` field) and ``latent_modes``, and
    implement :meth:`latent_shape`, :meth:`encode_latent`, :meth:`decode_latent`,
    :meth:`reconstruct` and :meth:`training_loss`; the rest has defaults. Inputs are float frames
    in [0, 1] of shape ``(N, C, H, W)`` (see :func:`vaerl.models.blocks.to_unit`); latents are
    flat, ``(N, latent_dim(mode))``.
    """

    kind: ClassVar[str]
    config_class: ClassVar[type]
    latent_modes: ClassVar[tuple[str, ...]] = ("mean",)
    """The modes of :data:`LATENT_MODES` this family offers; ``mean`` always."""
    can_sample_prior: ClassVar[bool] = False
    """Whether :meth:`sample_prior` works (a fixed prior such as N(0, I); a VQ-VAE needs a learned one)."""

    def __init__(self, config: Any) -> None:
        super().__init__()
        self.config = config

    @classmethod
    def stored_config(cls, config: dict[str, Any]) -> dict[str, Any]:
        """A config read from a checkpoint, with the values older vaerl versions meant by the keys they
        did not write yet (a default that changed must not change what an old checkpoint builds)."""
        return config

    # ------------------------------------------------------------------ the latent contract
    @property
    def input_shape(self) -> tuple[int, int, int]:
        """``(C, H, W)`` of the frames the model was built for."""
        channels, height, width = (int(v) for v in self.config.input_shape)
        return channels, height, width

    def check_mode(self, mode: str) -> None:
        """Raise a ``ValueError`` naming the modes on offer when ``mode`` is not one of them."""
        if mode not in LATENT_MODES:
            raise ValueError(f"mode must be one of {tuple(LATENT_MODES)}, got {mode!r}")
        if mode not in self.latent_modes:
            raise ValueError(f"mode={mode!r} ({LATENT_MODES[mode]}) is not offered by a {self.kind} encoder; "
                             f"it offers {', '.join(self.latent_modes)}")

    def latent_shape(self, mode: str = "mean") -> tuple[int, ...]:
        """Structure of one frame's latent before flattening (VAE ``(latent_dim,)``, VQ-VAE ``(D, h, w)``)."""
        raise NotImplementedError

    def latent_dim(self, mode: str = "mean") -> int:
        """Length of one frame's flat latent in ``mode``."""
        return math.prod(self.latent_shape(mode))

    def latent_space(self, mode: str = "mean") -> spaces.Space:
        """The gymnasium space of one frame's flat latent: ``Box(float32)`` unless a family says otherwise."""
        return spaces.Box(-np.inf, np.inf, (self.latent_dim(mode),), np.float32)

    def encode_latent(self, x: torch.Tensor, mode: str = "mean", *,
                      generator: torch.Generator | None = None) -> torch.Tensor:
        """Frames ``(N, C, H, W)`` -> latents ``(N, latent_dim(mode))``; ``generator`` seeds ``sample``."""
        raise NotImplementedError

    def decode_latent(self, latents: torch.Tensor, mode: str = "mean") -> torch.Tensor:
        """Decoder means in [0, 1], ``(N, C, H, W)``, of flat latents made by :meth:`encode_latent` in ``mode``."""
        raise NotImplementedError

    def sample_prior(self, n: int, *, generator: torch.Generator | None = None) -> torch.Tensor:
        """Decoder means of ``n`` draws from the model's own prior (only when :attr:`can_sample_prior`)."""
        raise NotImplementedError(f"a {self.kind} model has no fixed prior to sample from"
                                  + ("; fit one over its codes with vaerl.evaluation.fit_prior"
                                     if "indices" in self.latent_modes else ""))

    @property
    def codebook(self) -> torch.Tensor:
        """The code vectors ``(num_codes, D)`` behind ``mode="indices"`` (only models that offer that mode)."""
        raise NotImplementedError(f"a {self.kind} model has a continuous latent and no codebook")

    def describe_latent(self) -> str:
        """A short human description of the latent, e.g. ``32-d`` or ``10x10x8 grid``."""
        return f"{self.latent_dim('mean')}-d"

    def projections(self) -> ProjectionLayout | None:
        """Where the ``mean`` latent holds 1-D projections of the frame; ``None`` (the default) if nowhere."""
        return None

    def cells(self) -> CellLayout | None:
        """Where the ``mean`` latent holds a grid of cells over the frame; ``None`` (the default) if nowhere."""
        return None

    @property
    def num_axes(self) -> int:
        """How many axes :meth:`traverse` can sweep (default: the first axis of the mean latent)."""
        return self.latent_shape("mean")[0]

    def latent_axes(self, x: torch.Tensor, limit: int) -> LatentAxes:
        """Up to ``limit`` traversal axes, most informative on frames ``x`` first (default: in order)."""
        return LatentAxes("latent dimensions", list(range(min(limit, self.num_axes))), {})

    def traverse(self, latent: torch.Tensor, dim: int, values: torch.Tensor) -> torch.Tensor:
        """Flat mean latents ``(len(values), latent_dim)`` that move one ``latent`` along axis ``dim``.

        The default sets the axis to each value (a sweep over the prior's range).
        """
        grid = latent.view(self.latent_shape("mean")).repeat(len(values), *[1] * len(self.latent_shape("mean")))
        grid[:, dim] = values.view(-1, *[1] * (grid.ndim - 2))
        return grid.flatten(1)

    # ------------------------------------------------------------------ what agents and training use
    def set_background(self, background: torch.Tensor) -> None:
        """Told the static background ``(C, H, W)`` of the input, every stacked frame, in [0, 1] (the training data's
        median frame) before training; families that use it keep it in their weights (VAE object channels).
        Default: ignored."""

    @property
    def feature_dim(self) -> int:
        """Size of :meth:`features` per frame."""
        return self.latent_dim("mean")

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Deterministic latent features ``(N, feature_dim)``: the ``mean`` latent."""
        return self.encode_latent(x, "mean")

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """Decoder mean of the reconstruction, in [0, 1]."""
        raise NotImplementedError

    @property
    def pair_offset(self) -> int:
        """How many steps later in its episode each training frame's partner is, for an objective over pairs of
        frames (0, the default: frames train alone). The pretraining loader then hands :meth:`training_loss`
        ``paired`` batches: ``B`` frames, then their partners."""
        return 0

    @property
    def num_actions(self) -> int:
        """How many actions the objective tells apart, reading the action taken from each first frame of a pair (0,
        the default: it reads none). Pretraining then hands :meth:`training_loss` ``actions``, the ``B`` actions
        taken from the first frames of a paired batch, each in ``[0, num_actions)``."""
        return 0

    def training_loss(self, x: torch.Tensor, pixel_weights: torch.Tensor | None = None, step: int = 0,
                      paired: bool = False, actions: torch.Tensor | None = None) -> LossOutput:
        """One batch's loss; ``pixel_weights`` (shaped like ``x``) weigh the reconstruction term, ``step`` drives
        schedules (KL warm-up), ``paired`` says ``x`` holds frames, then their partners (:attr:`pair_offset`), and
        ``actions`` are the actions taken from the first half (:attr:`num_actions`). Pretraining passes ``paired``
        and ``actions`` only to models that ask for them, so families of single frames may omit both."""
        raise NotImplementedError

    def config_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self.config)
