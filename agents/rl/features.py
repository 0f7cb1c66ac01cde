"""Stable-Baselines3 features extractors for latent runs.

:class:`EncoderFeatures` is a pretrained vaerl encoder inside the policy, frozen or fine-tuned: the env
hands the policy preprocessed uint8 frames (:class:`vaerl.wrappers.PreprocessedVecEnv`) and the
extractor encodes them with the checkpoint's encoder, so with ``trainable=True`` the encoder learns
with the policy (``encoder.finetune=true``). With ``trainable=False`` it is the same computation as
:class:`vaerl.wrappers.LatentVecEnv`, only inside the policy.

:class:`StandardizedLatents` standardises latents the env already encoded (``encoder.standardize=true``),
with :class:`ProjectionKeypoints` beside them where asked (``encoder.projection_keypoints``);
:class:`ProjectionConvFeatures` also reads their frame projections with 1-D convolutions
(``encoder.projection_conv=true``), and :class:`CellConvFeatures` reads their grid of foreground cells with
2-D convolutions (``encoder.cell_conv=true``).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from gymnasium import spaces
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor
from torch import nn

from vaerl.checkpoint import load_model
from vaerl.errors import CheckpointError
from vaerl.models import build_model
from vaerl.models.base import CellLayout, ProjectionLayout


def window_frames(frames_per_input: int, stack: int, stack_mode: str) -> int:
    """Frames the env must stack so the extractor can encode ``stack`` consecutive inputs."""
    latents = 2 if stack_mode == "delta" else stack
    return frames_per_input + latents - 1


class EncoderFeatures(BaseFeaturesExtractor):
    """Frames ``(N, W*C, H, W)`` in [0, 1] -> latents ``(N, stack*D)`` (or ``(N, 2D)`` for ``delta``).

    The model is rebuilt from its kind and config (plain JSON, saved with the agent) so that SB3 can
    reload the policy without the checkpoint file; :meth:`load_checkpoint` copies pretrained weights in.

    Args:
        observation_space: the stacked frames, ``W = frames_per_input + stack - 1`` frames of ``C`` channels.
        kind: ``vae`` or ``vqvae``.
        model_config: the model's keyword arguments, as stored in the checkpoint.
        frames_per_input: frames the encoder takes at once (its spec's ``frame_stack``).
        stack: consecutive latents returned (``concat``); ``delta`` returns latent and difference.
        trainable: train the encoder with the policy (``False``: frozen, gradients stop here).
    """

    def __init__(
        self,
        observation_space: spaces.Box,
        kind: str,
        model_config: dict[str, Any],
        frames_per_input: int = 1,
        stack: int = 1,
        stack_mode: str = "concat",
        trainable: bool = True,
    ) -> None:
        model = build_model(kind, **model_config)
        inputs = 2 if stack_mode == "delta" else stack
        super().__init__(observation_space, features_dim=model.feature_dim * (2 if stack_mode == "delta" else stack))
        in_channels = int(model.config.input_shape[0])  # type: ignore[attr-defined]
        self.frame_channels = in_channels // frames_per_input
        expected = self.frame_channels * window_frames(frames_per_input, stack, stack_mode)
        if observation_space.shape[0] != expected:
            raise ValueError(f"EncoderFeatures needs {expected} stacked channels for stack={stack} ({stack_mode}), "
                             f"got observations {observation_space.shape}")
        self.model, self.inputs, self.stack_mode = model, inputs, stack_mode
        self.in_channels = in_channels
        self.trainable = trainable
        self.model.requires_grad_(trainable)
        self.model.eval()

    def train(self, mode: bool = True) -> EncoderFeatures:
        # the encoder always runs as in inference (no VQ codebook updates, no dropout); gradients still flow
        super().train(mode)
        self.model.eval()
        return self

    def load_checkpoint(self, path: str | Path) -> None:
        """Copy the weights of an encoder checkpoint into this extractor."""
        model, info = load_model(path, "cpu")
        if info.kind != self.model.kind or model.config_dict() != self.model.config_dict():
            raise CheckpointError(f"{path} holds a different {info.kind} encoder than this policy was built for")
        self.model.load_state_dict(model.state_dict())

    def forward(self, observations: torch.Tensor) -> torch.Tensor:
        # (N, W*C, H, W) -> `inputs` overlapping windows of `in_channels` channels, oldest first
        windows = [observations[:, i * self.frame_channels: i * self.frame_channels + self.in_channels]
                   for i in range(self.inputs)]
        x = torch.cat(windows)  # (inputs*N, in_channels, H, W)
        if x.device.type == "cpu":
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.set_grad_enabled(self.trainable and torch.is_grad_enabled()):
            z = self.model.features(x).view(self.inputs, observations.shape[0], -1)
        if self.stack_mode == "delta":
            return torch.cat([z[1], z[1] - z[0]], dim=1)
        return torch.cat(list(z), dim=1)  # [z_{t-k+1}, ..., z_t]


def load_pretrained(policy: torch.nn.Module, path: str | Path) -> int:
    """Load ``path`` into every :class:`EncoderFeatures` of ``policy`` (actor, critic, targets); returns how many."""
    extractors = [m for m in policy.modules() if isinstance(m, EncoderFeatures)]
    for extractor in extractors:
        extractor.load_checkpoint(path)
    return len(extractors)


PROJECTION_SCALES = ("axis", "number")
"""How :class:`StandardizedLatents` scales frame projections: one scale per axis, or one per number."""


STANDARDIZE_FLOOR = 0.1
"""Least spread the standardisations divide by: a number that hardly varied in random play is divided by this
instead of its tiny spread. A VAE's collapsed dimensions vary little (0.02-0.1 on a collapsed Breakout draw, 2e-4
in a random-init Gaussian part), so the policy sees them shrunk, or as constants; a smaller floor
(``encoder.standardize_floor``) hands it their small variations at unit spread (on Breakout that moved neither,
BENCHMARKS.md)."""


class StandardizedLatents(BaseFeaturesExtractor):
    """Latents ``(N, ...)`` -> ``(latent - mean) / scale``, flattened and clipped.

    A latent's numbers come in different units: Gaussian means near N(0, 1), foreground sums up to a few
    pixels' worth, part masses up to tens of pixels, centres in [-1, 1]. An MLP's first layer sees them on
    one scale after this. The statistics are fitted once, before training, on observations of random play
    (:meth:`fit`, as RND initialises its observation normalisation) and then stay fixed, so a stored
    rollout means the same thing at every PPO epoch. They are buffers: checkpoints and ``agent.zip`` carry
    them, and evaluation, video and resumed runs see what training saw. A number that hardly varied in
    random play is divided by ``floor`` instead of its tiny spread, and clipping to ``[-clip, clip]``
    bounds what random play never showed.

    ``shared_layers`` (widths) adds ReLU layers after the standardisation. The features extractor is shared
    by the policy and value heads, so these layers learn from both losses, as the pixel policy's NatureCNN
    (and its 512-unit layer) does; without them the heads' own MLPs (``net_arch``) read the latents apart.

    Frame projections (``layout``, a :class:`vaerl.models.base.ProjectionLayout` as a dict) are divided by
    one scale per channel and axis instead: their spread pooled over all places. Scaled one by one, a Breakout
    column that random play hardly touched (a wall of bricks) has a spread near ``floor``, so once a
    learning agent knocks bricks out of it the column sits at the clip, and a ball in that column, however
    far below the wall, no longer changes what the policy sees. With one scale per axis a column keeps
    its shape at every stage of the game, within the wider bound :attr:`projection_clip`
    (``projection_scale="number"`` keeps them number by number while ``layout`` serves the blur).

    Signed cells (``cells``, a :class:`vaerl.models.base.CellLayout` as a dict with ``signed``) are one picture:
    divided by one scale, their spread pooled over all cells, and never clipped. Scaled one by one, a cell of
    the wall that random play never changed would sit at the clip once its bricks are gone, and the ball in
    front of the hole would change nothing; signed cells are bounded by construction.

    ``projection_blur`` (a Gaussian's sigma, in places) first blurs every frame projection along its axis
    (:func:`projection_blur_matrix`), so neighbouring places share inputs; the statistics are those of the
    blurred latents.

    ``projection_keypoints`` (a count per axis) appends :class:`ProjectionKeypoints` of every stacked latent:
    learned places along each axis, as numbers, after the standardised latents and before ``shared_layers``.

    ``projection_shift`` (places) augments while the policy learns, and only then (``self.training``: SB3's
    updates, not its rollouts, evaluation or play): every sample's projections move along each axis by a
    random whole number of places up to ``projection_shift``, the same for its stacked latents, edges
    repeated (:func:`shift_projections`). That is the random translation of RAD and DrQ, applied to
    the frame's projections: the policy must act alike on a scene a few places over, so what it learns about
    a ball at one place is learnt at its neighbours too.
    """

    projection_clip = 20.0
    """Bound on scaled projections: late-game walls with many bricks gone sum to several times what random
    play shows, and the policy should still see the ball on top of them."""

    def __init__(self, observation_space: spaces.Box, floor: float = STANDARDIZE_FLOOR, clip: float = 5.0,
                 layout: dict[str, int] | None = None, shared_layers: Sequence[int] = (),
                 projection_scale: str = "axis", projection_blur: float = 0.0,
                 projection_keypoints: int = 0, projection_shift: int = 0,
                 cells: dict[str, int] | None = None) -> None:
        size = int(np.prod(observation_space.shape))
        if projection_scale not in PROJECTION_SCALES:
            raise ValueError(f"projection_scale must be one of {PROJECTION_SCALES}, got {projection_scale!r}")
        for name, value in (("projection_blur", projection_blur), ("projection_keypoints", projection_keypoints),
                            ("projection_shift", projection_shift)):
            if value < 0 or (value > 0 and not layout):
                raise ValueError(f"{name} must be >= 0 and needs the latents' projection layout, "
                                 f"got {value} with layout {layout}")
        keypoints = ProjectionKeypoints(ProjectionLayout(**layout), projection_keypoints, size // layout["size"],
                                        floor=floor) if layout and projection_keypoints else None
        inputs = size + (keypoints.features_dim if keypoints else 0)
        super().__init__(observation_space, features_dim=shared_layers[-1] if shared_layers else inputs)
        self.keypoints = keypoints
        self.shared = _relu_layers(inputs, shared_layers)
        self.floor, self.clip = float(floor), float(clip)
        self.register_buffer("mean", torch.zeros(size))
        self.register_buffer("scale", torch.ones(size))
        self.layout = ProjectionLayout(**layout) if layout else None
        pooled = self.layout if projection_scale == "axis" else None
        # the group whose pooled spread scales each number: its projection (axis * channels + channel), then
        # the signed cells; -1 for numbers scaled on their own (all, when projections are scaled number by number)
        index = _projection_index(size, pooled)
        bound = torch.where(index >= 0, self.projection_clip, self.clip)
        if cells is not None:
            cell_layout = CellLayout(**cells)
            if not cell_layout.signed:
                raise ValueError("StandardizedLatents pools the scale of signed cells only; distance cells are "
                                 "standardised number by number (pass cells=None)")
            _check_stacked(self, observation_space, size // cell_layout.size, cell_layout.size)
            in_cells = _block_mask(size, cell_layout.size, cell_layout.start, cell_layout.stop)
            index[in_cells] = int(index.max()) + 1
            bound[in_cells] = torch.inf
        self.register_buffer("scale_group", index, persistent=False)
        self.register_buffer("bound", bound, persistent=False)
        self.projection_blur = float(projection_blur)
        self.projection_shift = int(projection_shift)
        blur = projection_blur_matrix(self.layout, self.projection_blur) if self.projection_blur else None
        self.register_buffer("blur", blur, persistent=False)

    def blurred(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, size)`` latents with each frame projection blurred along its axis (unchanged without blur)."""
        if self.blur is None:
            return x
        layout = self.layout
        assert layout is not None
        latents = x.reshape(len(x), -1, layout.size)
        projections = latents[..., layout.start: layout.stop] @ self.blur.T
        return torch.cat([latents[..., : layout.start], projections, latents[..., layout.stop:]], -1).flatten(1)

    @torch.no_grad()
    def fit(self, observations: np.ndarray | torch.Tensor) -> None:
        """Set mean and scale from ``(N, ...)`` observations (N >= 2)."""
        x = torch.as_tensor(observations, dtype=torch.float32).flatten(1)
        if x.shape[0] < 2 or x.shape[1] != self.mean.numel():
            raise ValueError(f"StandardizedLatents.fit needs (N >= 2, {self.mean.numel()}) observations, "
                             f"got {tuple(x.shape)}")
        if self.keypoints is not None:
            self.keypoints.fit(x)
        x = self.blurred(x)
        self.mean.copy_(x.mean(0))
        variance = x.var(0)
        self.scale.copy_(variance.sqrt().clamp(min=self.floor))
        for group in range(int(self.scale_group.max()) + 1):
            where = self.scale_group == group  # one projection's places (or all signed cells) share their spread
            self.scale[where] = variance[where].mean().sqrt().clamp(min=self.floor)

    def forward(self, observations: torch.Tensor) -> torch.Tensor:
        x = observations.flatten(1)
        if self.training and self.projection_shift:
            assert self.layout is not None
            x = shift_projections(x, self.layout, self.projection_shift)
        standardized = (self.blurred(x) - self.mean) / self.scale
        features = torch.maximum(torch.minimum(standardized, self.bound), -self.bound)
        if self.keypoints is not None:
            features = torch.cat([features, self.keypoints(x)], dim=1)
        return self.shared(features)


class ProjectionKeypoints(nn.Module):
    """Stacked latents ``(N, stack * size)`` -> learned places along the frame's axes ``(N, stack * 2 * count)``.

    Breakout's action hangs on where the ball is relative to the paddle. Frame projections say it place by
    place (a bump in column 40), so an MLP reading them must learn every pairing of ball place and paddle
    place apart. A keypoint is a place as a number instead: a 1-D convolution scores every place of a
    projection, a softmax over the places turns the scores into weights, and the keypoint is the weighted
    mean place in [-1, 1] (a spatial softmax, as in Levine et al.'s visuomotor policies and Finn et al.'s
    deep spatial autoencoders, here along each axis). One narrow filter can score the ball and a wide one the
    paddle; "ball left of paddle" is then a difference of two numbers, and the ball's motion a difference
    between stacked frames. The convolutions learn with the policy (from both heads' losses).

    Per axis (columns, rows), ``count`` filters read the ``channels`` projections of one latent; every
    latent of the stack gets the same filters. Projections are divided by one scale per channel and axis,
    fitted on random play (:meth:`fit`, a buffer, so ``agent.zip`` carries it), so a filter sees an object
    alike at every place.
    """

    kernel = 7
    projection_clip = StandardizedLatents.projection_clip

    def __init__(self, layout: ProjectionLayout, count: int, stack: int, floor: float = STANDARDIZE_FLOOR) -> None:
        super().__init__()
        if count < 1 or stack < 1:
            raise ValueError(f"ProjectionKeypoints needs count >= 1 and stack >= 1, got {count} and {stack}")
        self.layout, self.count, self.stack, self.floor = layout, int(count), int(stack), float(floor)
        padding = self.kernel // 2
        self.columns = nn.Conv1d(layout.channels, self.count, self.kernel, padding=padding)
        self.rows = nn.Conv1d(layout.channels, self.count, self.kernel, padding=padding)
        self.register_buffer("scale", torch.ones(2, layout.channels))  # columns, rows
        self.register_buffer("column_places", torch.linspace(-1.0, 1.0, layout.width), persistent=False)
        self.register_buffer("row_places", torch.linspace(-1.0, 1.0, layout.height), persistent=False)

    @property
    def features_dim(self) -> int:
        return self.stack * 2 * self.count

    def _projections(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(N, stack * size)`` -> column and row projections ``(N * stack, channels, W | H)``."""
        layout = self.layout
        if x.shape[1] != self.stack * layout.size:
            raise ValueError(f"ProjectionKeypoints expects {self.stack} latents of {layout.size} numbers, "
                             f"got {x.shape[1]} numbers")
        projections = x.reshape(-1, layout.size)[:, layout.start: layout.stop]
        projections = projections.reshape(-1, layout.channels, layout.width + layout.height)
        return projections[..., : layout.width], projections[..., layout.width:]

    @torch.no_grad()
    def fit(self, observations: torch.Tensor) -> None:
        """Set the scales from ``(N, stack * size)`` observations: each projection's spread over all places."""
        for axis, projection in enumerate(self._projections(observations)):
            self.scale[axis].copy_(projection.transpose(0, 1).flatten(1).std(1).clamp(min=self.floor))

    def forward(self, observations: torch.Tensor) -> torch.Tensor:
        points = []
        columns, rows = self._projections(observations)
        for axis, (projection, conv, places) in enumerate(((columns, self.columns, self.column_places),
                                                           (rows, self.rows, self.row_places))):
            signal = (projection / self.scale[axis][:, None]).clamp(-self.projection_clip, self.projection_clip)
            weights = torch.softmax(conv(signal), dim=-1)  # (N * stack, count, places)
            points.append(weights @ places)                 # (N * stack, count)
        return torch.cat(points, dim=1).reshape(len(observations), self.features_dim)


def shift_projections(latents: torch.Tensor, layout: ProjectionLayout, most: int,
                      generator: torch.Generator | None = None) -> torch.Tensor:
    """``(N, stack * size)`` stacked latents with their frame projections moved along each axis.

    Per sample and axis a whole number of places ``s`` in ``[-most, most]`` is drawn; the new projection at
    place ``i`` is the old one at ``i + s``, clamped to the frame (edges repeated, as DrQ pads by replication
    before its random crop). All channels and stacked latents of a sample move alike, so motion between
    frames is kept; the numbers outside the projections are left as they are.
    """
    n = len(latents)
    stacked = latents.reshape(n, -1, layout.size)
    projections = stacked[..., layout.start: layout.stop].reshape(n, stacked.shape[1], layout.channels, -1)
    moved = []
    for offset, length in ((0, layout.width), (layout.width, layout.height)):
        shift = torch.randint(-most, most + 1, (n, 1), generator=generator).to(latents.device)
        source = (torch.arange(length, device=latents.device) + shift).clamp(0, length - 1)  # (N, length)
        part = projections[..., offset: offset + length]
        moved.append(torch.gather(part, -1, source[:, None, None, :].expand_as(part)))
    projections = torch.cat(moved, -1).flatten(2)
    return torch.cat([stacked[..., : layout.start], projections, stacked[..., layout.stop:]], -1).flatten(1)


def projection_blur_matrix(layout: ProjectionLayout | None, sigma: float) -> torch.Tensor:
    """``(P, P)`` map of one latent's ``P`` projection numbers: each projection convolved along its axis with
    a Gaussian of ``sigma`` places (cut at 3 sigma, weights renormalised at the frame's edges).

    Coarse coding, as tile coding gives a linear learner: a ball one column further right then shares most
    of its inputs with the ball where it was, so what an MLP learns at one place carries over to the next,
    the sharing a convolution has by construction. The map keeps the projections' order and length.
    """
    if layout is None or sigma <= 0:
        raise ValueError(f"a projection blur needs a projection layout and sigma > 0, got {layout} and {sigma}")
    blocks = []
    for length in [layout.width, layout.height] * layout.channels:  # channel-major: columns, then rows
        place = torch.arange(length, dtype=torch.float32)
        weights = torch.exp(-0.5 * ((place[:, None] - place[None, :]) / sigma) ** 2)
        weights = torch.where((place[:, None] - place[None, :]).abs() <= 3 * sigma, weights, 0.0)
        blocks.append(weights / weights.sum(1, keepdim=True))
    return torch.block_diag(*blocks)


def _relu_layers(inputs: int, widths: Sequence[int]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for width in widths:
        layers += [nn.Linear(inputs, width), nn.ReLU()]
        inputs = width
    return nn.Sequential(*layers)


def _block_mask(size: int, latent_size: int, start: int, stop: int) -> torch.Tensor:
    """``(size,)``: True at numbers ``[start, stop)`` of every latent of ``latent_size`` in ``size`` numbers."""
    place = torch.arange(size) % latent_size
    return (place >= start) & (place < stop)


def _projection_index(size: int, layout: ProjectionLayout | None) -> torch.Tensor:
    """``(size,)``: for observations of whole latents with ``layout``, each number's projection
    (``axis * channels + channel``), -1 where it is no projection (and everywhere without a layout)."""
    index = torch.full((size,), -1, dtype=torch.long)
    if layout is None:
        return index
    if size % layout.size:
        raise ValueError(f"observations of {size} numbers are not whole latents of {layout.size}: "
                         "pass the layout of the latents the observations stack")
    lengths = torch.tensor([layout.width, layout.height]).repeat(layout.channels)
    one = torch.repeat_interleave(torch.arange(2 * layout.channels), lengths)  # channel-major: columns, rows
    one = torch.where(one % 2 == 0, one // 2, layout.channels + one // 2)     # -> axis * channels + channel
    for block in range(size // layout.size):
        start = block * layout.size + layout.start
        index[start: start + len(one)] = one
    return index


class ProjectionConvFeatures(BaseFeaturesExtractor):
    """Stacked latents with 1-D projections -> 1-D conv features of the projections, beside the rest standardised.

    An MLP reads a column projection as 84 unrelated inputs: what it learns about the ball in one column
    it must learn again for every other column, where the pixel baseline's NatureCNN shares one detector
    over the whole frame. This extractor gives the projections that sharing: per axis, the ``stack``
    latents' column projections (rows likewise) are ``stack * channels`` signals of length ``width``,
    read by NatureCNN's three layers in 1-D (32, 64, 64 channels; kernels 8, 4, 3; strides 4, 2, 1). The
    projections are divided by one scale per channel and axis (their spread over all places, not each
    place's own), so an object looks the same at every place; the other numbers (Gaussian means, part statistics) are standardised one by one as in
    :class:`StandardizedLatents`. All statistics come from random play before training (:meth:`fit`)
    and are buffers, carried by ``agent.zip``.

    Args:
        observation_space: ``stack`` flat latents side by side.
        layout: :class:`vaerl.models.base.ProjectionLayout` of one latent, as a dict (saved with the agent).
        stack: latents per observation.
    """

    widths = (32, 64, 64)
    kernels = (8, 4, 3)
    strides = (4, 2, 1)
    projection_clip = 20.0
    """Bound on scaled projections: wider than ``clip``, since late-game walls with many bricks gone sum to
    several times what random play shows, and the convolutions should still see their shape."""

    def __init__(self, observation_space: spaces.Box, layout: dict[str, int], stack: int,
                 floor: float = STANDARDIZE_FLOOR, clip: float = 5.0) -> None:
        self.layout = ProjectionLayout(**layout)
        self.stack = int(stack)
        _check_stacked(self, observation_space, self.stack, self.layout.size)
        unordered = self.stack * (self.layout.size - (self.layout.stop - self.layout.start))
        inputs = self.stack * self.layout.channels
        columns, rows = self._net(inputs), self._net(inputs)
        lengths = [self._length(n) for n in (self.layout.width, self.layout.height)]
        if min(lengths) < 1:
            shortest = next(n for n in range(1, 1000) if self._length(n) >= 1)
            raise ValueError(f"projections of {self.layout.width} columns and {self.layout.height} rows are too "
                             f"short for the 1-D convolutions (at least {shortest} each); "
                             f"use encoder.projection_conv=false")
        super().__init__(observation_space, features_dim=unordered + self.widths[-1] * sum(lengths))
        self.columns, self.rows = columns, rows
        self.floor, self.clip = float(floor), float(clip)
        self.register_buffer("mean", torch.zeros(unordered))
        self.register_buffer("scale", torch.ones(unordered))
        self.register_buffer("projection_scale", torch.ones(2, self.layout.channels))  # columns, rows

    def _net(self, inputs: int) -> nn.Sequential:
        layers: list[nn.Module] = []
        for width, kernel, stride in zip(self.widths, self.kernels, self.strides):
            layers += [nn.Conv1d(inputs, width, kernel, stride), nn.ReLU()]
            inputs = width
        return nn.Sequential(*layers, nn.Flatten())

    def _length(self, length: int) -> int:
        for kernel, stride in zip(self.kernels, self.strides):
            length = (length - kernel) // stride + 1 if length >= kernel else 0
        return length

    def _split(self, observations: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """-> unordered numbers ``(N, U)``, column and row projections ``(N, stack, channels, W|H)``."""
        layout = self.layout
        unordered, projections = _split_stacked(observations, self.stack, layout.size, layout.start, layout.stop)
        projections = projections.reshape(len(projections), self.stack, layout.channels, layout.width + layout.height)
        return unordered, projections[..., : layout.width], projections[..., layout.width:]

    @torch.no_grad()
    def fit(self, observations: np.ndarray | torch.Tensor) -> None:
        """Set the scales from ``(N, ...)`` observations (N >= 2)."""
        unordered, columns, rows = self._split(_fit_input(self, observations, self.stack * self.layout.size))
        _fit_standardisation(self, unordered)
        for axis, projection in enumerate((columns, rows)):
            spread = projection.transpose(0, 2).flatten(1).std(1)  # one per channel
            self.projection_scale[axis].copy_(spread.clamp(min=self.floor))

    def forward(self, observations: torch.Tensor) -> torch.Tensor:
        unordered, columns, rows = self._split(observations)
        features = [((unordered - self.mean) / self.scale).clamp(-self.clip, self.clip)]
        for axis, (projection, net) in enumerate(((columns, self.columns), (rows, self.rows))):
            bound = self.projection_clip
            signal = (projection / self.projection_scale[axis][:, None]).clamp(-bound, bound)
            features.append(net(signal.flatten(1, 2)))
        return torch.cat(features, dim=1)


CELL_CONV_WIDTHS = (16, 32)
"""Filters of :class:`CellConvFeatures`' convolutions by default: half NatureCNN's first two layers'. On Breakout
they learn about as well as (32, 64) with a 512-unit join and train PPO about twice as fast (BENCHMARKS.md)."""
CELL_CONV_FEATURES = 256
"""Width of :class:`CellConvFeatures`' joining layer by default."""
CELL_CONV_SPREAD = 1.0
"""The cells' spread over random play as :class:`CellConvFeatures` reads them by default: 1, standardised. Most
cells of a random-play frame are empty, so standardised ones put a paddle near 10 and a late-game hole in the wall
near -20, where NatureCNN reads pixels in [0, 1]; at initialisation the joined features are then about 5 times
and the value head's guesses about 40 times as large as on pixels. 0.1 puts objects near 1, and did not move
Breakout agents (BENCHMARKS.md)."""


class CellConvFeatures(BaseFeaturesExtractor):
    """Stacked latents with a grid of cells -> NatureCNN-style features of the cells, beside the rest standardised.

    A latent's foreground cells (``model.foreground_cells``) are a tiny picture of the frame's moving things:
    14 x 14 numbers where the pixel baseline sees 84 x 84. An MLP reads them as unordered numbers and must
    learn a ball in every cell apart; this extractor reads the ``stack`` latents' grids as a ``stack``-channel
    image with 2-D convolutions, so one filter finds the ball, or the ball beside the paddle, wherever they
    are, as NatureCNN does on pixels. The cells are divided by one scale, their spread over all cells and
    frames of random play (zero stays zero: an empty cell, like the zero padding around the grid), and clipped
    to :attr:`cell_clip`, unless they are signed (``layout.signed``): those are bounded by construction, and a
    clip would hide the ball in front of a hole that alone fills the bound; the other
    numbers (Gaussian means, frame projections, part statistics) are standardised one by one as in
    :class:`StandardizedLatents`. Both are fitted before training (:meth:`fit`) and are buffers, carried by
    ``agent.zip``. As on pixels, one ReLU layer of ``features_dim`` units joins them, and the policy and value
    heads on top are linear.

    Args:
        observation_space: ``stack`` flat latents side by side.
        layout: :class:`vaerl.models.base.CellLayout` of one latent, as a dict (saved with the agent).
        stack: latents per observation.
        features_dim: width of the joining layer (NatureCNN's is 512).
        widths: filters of each 3 x 3 convolution; the first keeps the grid's size, each further one halves it.
        motion: also read each grid's change from the one before (``stack - 1`` more channels, same scale). The
            stack holds that change already, but as a small difference of large numbers where the ball passes a
            hole in the wall (late-game holes are ten times the ball's few pixels); as its own channels, what
            moved stands out at its own size and what stands still is zero.
        spread: the cells' spread over random play as the convolutions read them (:data:`CELL_CONV_SPREAD`).
        asinh: read each scaled cell (and change) through ``asinh``: as it is near zero, logarithmic beyond, so the
            ball's few pixels (3-4 at spread 1 on Breakout) are not dwarfed by the paddle (about 10) or a
            late-game hole in the wall (about -20) the way they are in the sums; NatureCNN sees every object's
            pixels at the same brightness whatever its size. On Breakout PPO learned at the same pace with it
            (BENCHMARKS.md), so it is off by default.
    """

    kernel = 3
    cell_clip = StandardizedLatents.projection_clip
    """Bound on scaled cells: late-game walls with many bricks gone hold several times what random play shows."""

    def __init__(self, observation_space: spaces.Box, layout: dict[str, int], stack: int,
                 features_dim: int = CELL_CONV_FEATURES, widths: Sequence[int] = CELL_CONV_WIDTHS,
                 floor: float = STANDARDIZE_FLOOR, clip: float = 5.0, motion: bool = False,
                 spread: float = CELL_CONV_SPREAD, asinh: bool = False) -> None:
        self.layout = CellLayout(**layout)
        self.stack = int(stack)
        self.motion = bool(motion)
        _check_stacked(self, observation_space, self.stack, self.layout.size)
        if self.motion and self.stack < 2:
            raise ValueError("CellConvFeatures(motion=True) reads each grid's change from the one before: it needs "
                             f"a stack of 2 or more latents, got stack={self.stack}")
        if not spread > 0:
            raise ValueError(f"CellConvFeatures(spread=...) is the cells' spread as the convolutions read them, > 0; "
                             f"got {spread}")
        self.spread = float(spread)
        self.asinh = bool(asinh)
        if not widths or min(widths) < 1 or features_dim < 1:
            raise ValueError(f"CellConvFeatures needs positive filter counts and features_dim, got widths={list(widths)} "
                             f"and features_dim={features_dim}")
        super().__init__(observation_space, features_dim=features_dim)
        layers: list[nn.Module] = []
        inputs, side = (2 * self.stack - 1 if self.motion else self.stack), self.layout.cells
        for index, width in enumerate(widths):
            stride = 1 if index == 0 else 2
            layers += [nn.Conv2d(inputs, int(width), self.kernel, stride, padding=self.kernel // 2), nn.ReLU()]
            inputs, side = int(width), (side - 1) // stride + 1
        self.cnn = nn.Sequential(*layers, nn.Flatten())
        unordered = self.stack * (self.layout.size - self.layout.cells**2)
        self.join = nn.Sequential(nn.Linear(inputs * side * side + unordered, features_dim), nn.ReLU())
        self.floor, self.clip = float(floor), float(clip)
        self.register_buffer("mean", torch.zeros(unordered))
        self.register_buffer("scale", torch.ones(unordered))
        self.register_buffer("cell_scale", torch.ones(()))

    def _split(self, observations: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """-> unordered numbers ``(N, U)`` and cells ``(N, stack, G, G)``."""
        layout = self.layout
        unordered, cells = _split_stacked(observations, self.stack, layout.size, layout.start, layout.stop)
        return unordered, cells.reshape(len(cells), self.stack, layout.cells, layout.cells)

    @torch.no_grad()
    def fit(self, observations: np.ndarray | torch.Tensor) -> None:
        """Set the scales from ``(N, ...)`` observations (N >= 2)."""
        unordered, cells = self._split(_fit_input(self, observations, self.stack * self.layout.size))
        _fit_standardisation(self, unordered)
        self.cell_scale.copy_(cells.std().clamp(min=self.floor) / self.spread)

    def forward(self, observations: torch.Tensor) -> torch.Tensor:
        unordered, cells = self._split(observations)
        signal = cells / self.cell_scale
        if self.motion:  # changes of the unclipped grids: a saturated cell still shows what moved in it
            signal = torch.cat([signal, signal[:, 1:] - signal[:, :-1]], dim=1)
        if not self.layout.signed:
            signal = signal.clamp(-self.cell_clip, self.cell_clip)
        if self.asinh:
            signal = torch.asinh(signal)
        rest = ((unordered - self.mean) / self.scale).clamp(-self.clip, self.clip)
        return self.join(torch.cat([self.cnn(signal), rest], dim=1))


def _check_stacked(extractor: nn.Module, observation_space: spaces.Box, stack: int, size: int) -> None:
    """Raise unless ``observation_space`` holds ``stack`` flat latents of ``size`` numbers each."""
    if int(np.prod(observation_space.shape)) != stack * size:
        raise ValueError(f"{type(extractor).__name__} expects {stack} latents of {size} numbers, "
                         f"got observations {observation_space.shape}")


def _split_stacked(observations: torch.Tensor, stack: int, size: int, start: int,
                   stop: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(N, stack * size)`` latents -> the numbers outside ``[start, stop)`` of each latent ``(N, U)``, and
    the block inside ``(N, stack, stop - start)``."""
    x = observations.reshape(len(observations), stack, size)
    return torch.cat([x[..., :start], x[..., stop:]], dim=-1).flatten(1), x[..., start:stop]


def _fit_input(extractor: nn.Module, observations: np.ndarray | torch.Tensor, size: int) -> torch.Tensor:
    """``observations`` as a float ``(N >= 2, size)`` tensor, or a ValueError naming ``extractor``."""
    x = torch.as_tensor(observations, dtype=torch.float32).flatten(1)
    if x.shape[0] < 2 or x.shape[1] != size:
        raise ValueError(f"{type(extractor).__name__}.fit needs (N >= 2, {size}) observations, got {tuple(x.shape)}")
    return x


def _fit_standardisation(extractor: nn.Module, unordered: torch.Tensor) -> None:
    """Set ``extractor.mean`` and ``extractor.scale`` (floored at ``extractor.floor``) from ``(N, U)`` numbers."""
    if unordered.shape[1]:
        extractor.mean.copy_(unordered.mean(0))
        extractor.scale.copy_(unordered.std(0).clamp(min=extractor.floor))
