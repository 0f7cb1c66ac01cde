"""Object paths: where the small things are, in numbers a linear layer can read.

Two paths, either of which a VAE can carry beside its Gaussian latent:

* :class:`ForegroundProjections` (the default): sums of the frame's foreground (its difference from, or
  distance from, the static background) over a coarse grid of cells, by default the frame minus the
  background over 14 x 14 tent cells, and its column and row sums. Nothing learned, nothing dropped; see
  its docstring. Optionally a learned partition of that foreground into parts, each handed on as its mass,
  centre and spread, so that objects sharing rows (Pong's paddles) come apart.
* :class:`ObjectEncoder` (experimental, learned object channels), described below.

A VAE with one global Gaussian latent draws Atari's ball as a smudge: a two-pixel object costs the KL
term more than it buys in reconstruction, and even when its position is in the code it is folded
nonlinearly into a few dimensions that neither a linear probe nor a small policy unpicks. Both paths
give the model a second, deterministic way to say where things are, in the spirit of spatial feature
points for control (Finn et al. 2016, "Deep Spatial Autoencoders for Visuomotor Learning") and keypoint
bottlenecks (Jakab et al. 2018; Kulkarni et al. 2019). The learned object channels work like this:

* a cheap conv net at half the input resolution scores every location for each of ``K`` object
  channels and one "nothing" channel; a softmax over the channels at each location makes them compete,
  so two channels cannot both settle on the same object. The net sees the frame minus the static
  background (the training data's median frame, kept in the weights), so walls and intact bricks
  cannot capture a channel, and a learned per-location bias lets a channel prefer, say, the paddle's row;
* the channel's part of the latent is its map's two projections, a smooth maximum over rows (``x``, how
  strongly the channel fires in each column) and over columns (``y``): ``H' + W'`` numbers per channel;
* the decoder renders each channel back as the outer product ``y x^T`` (for one object, its box) and
  adds what a small conv net makes of those maps to the global decoder's logits.

In both paths a projection is a soft one-hot over columns: linearly decodable to the column itself,
which is what the linear probes measure and what a small policy network needs. Measured limits of the
learned channels (BENCHMARKS.md): they take the largest moving things first (paddle, bricks, score), so a
channel may hold the ball together with another object, the outer product then draws ghosts, and they
probe below the foreground projections.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

PART_STATS = 5
"""Numbers per foreground part: its mass, centre x, centre y, spread x, spread y."""


class ObjectProjections(NamedTuple):
    x: torch.Tensor  # (N, K, W') per channel: how much of it is in each column
    y: torch.Tensor  # (N, K, H') per channel: how much of it is in each row
    parts: torch.Tensor | None = None  # (N, P, PART_STATS) learned foreground parts (ForegroundProjections)
    cells: torch.Tensor | None = None  # (N, G, G) foreground sums over a coarse grid (ForegroundProjections)

    def flatten(self) -> torch.Tensor:
        """``(N, K * (W' + H') [+ P * PART_STATS] [+ G * G])``: per channel the column projection, then the
        row projection; then each part's statistics; then the grid's cells, row by row."""
        pieces = [torch.cat([self.x, self.y], dim=-1).flatten(1)]
        pieces += [extra.flatten(1) for extra in (self.parts, self.cells) if extra is not None]
        return pieces[0] if len(pieces) == 1 else torch.cat(pieces, dim=1)

    def maps(self) -> torch.Tensor:
        """``(N, K, H', W')`` outer products ``y x^T``: for a single object, its bounding box."""
        return self.y.unsqueeze(-1) * self.x.unsqueeze(-2)

    @classmethod
    def zeros(cls, n: int, channels: int, grid: tuple[int, int], like: torch.Tensor,
              num_parts: int = 0, cells: int = 0) -> ObjectProjections:
        """Projections of ``n`` frames with nothing in them."""
        height, width = grid
        return cls(like.new_zeros(n, channels, width), like.new_zeros(n, channels, height),
                   like.new_zeros(n, num_parts, PART_STATS) if num_parts else None,
                   like.new_zeros(n, cells, cells) if cells else None)

    @classmethod
    def unflatten(cls, flat: torch.Tensor, channels: int, grid: tuple[int, int],
                  num_parts: int = 0, cells: int = 0) -> ObjectProjections:
        """Inverse of :meth:`flatten` for ``flat`` of shape
        ``(N, channels * (W' + H') + num_parts * PART_STATS + cells * cells)``."""
        height, width = grid
        size = channels * (width + height)
        stats = num_parts * PART_STATS
        expected = size + stats + cells * cells
        if flat.dim() != 2 or flat.shape[1] != expected:
            raise ValueError(f"expected flat object latents of shape (N, {expected}) "
                             f"({channels} x ({width} + {height}) projections + {num_parts} x {PART_STATS} part "
                             f"statistics + {cells} x {cells} cells), got {tuple(flat.shape)}")
        projections = flat[:, :size].reshape(len(flat), channels, width + height)
        parts = flat[:, size:size + stats].reshape(len(flat), num_parts, PART_STATS) if num_parts else None
        grid_cells = flat[:, size + stats:].reshape(len(flat), cells, cells) if cells else None
        return cls(projections[..., :width], projections[..., width:], parts, grid_cells)


def soft_max(scores: torch.Tensor, dim: int, temperature: float = 0.05) -> torch.Tensor:
    """A smooth maximum of scores in [0, 1] along ``dim``: their average weighted by a sharp softmax.

    Unlike ``amax`` it passes gradient to every location, not only the current winner, so a channel
    stuck on one object still feels where another one is.
    """
    return (scores * torch.softmax(scores / temperature, dim=dim)).sum(dim)


def object_grid(input_hw: tuple[int, int]) -> tuple[int, int]:
    """Detection-map size for an input size: half resolution (84x84 -> 42x42)."""
    return input_hw[0] // 2, input_hw[1] // 2


class ObjectEncoder(nn.Module):
    """Frames ``(N, C, H, W)`` -> :class:`ObjectProjections` at half resolution."""

    name = "object"
    """What :meth:`vaerl.models.VAE.describe_latent` calls its projections."""
    num_parts = 0
    """Learned object channels have no part statistics (see :class:`ForegroundProjections`)."""
    cells = 0
    """... and no grid of cells."""

    def __init__(self, in_channels: int, input_hw: tuple[int, int], channels: int, hidden: int = 8) -> None:
        super().__init__()
        self.grid = object_grid(input_hw)
        self.channels = channels
        self.net = nn.Sequential(
            nn.Conv2d(in_channels, hidden, 4, 2, 1), nn.ReLU(inplace=True),
            nn.Conv2d(hidden, channels + 1, 3, 1, 1),
        )
        # a learned prior over locations per channel, so objects bound to a place can be told apart
        self.location_bias = nn.Parameter(torch.zeros(channels + 1, *self.grid))

        # the static background (the dataset's median frame, set by pretraining): the detector sees only what
        # differs from it, so walls, borders and intact bricks cannot capture a channel
        self.register_buffer("background", torch.zeros(in_channels, *input_hw))

    def forward(self, x: torch.Tensor) -> ObjectProjections:
        # channels compete for each location (the extra channel is "nothing here"): two channels cannot
        # both settle on the biggest object, so the next channel is free to find the next one
        scores = torch.softmax(self.net(x - self.background) + self.location_bias, dim=1)[:, : self.channels]
        return ObjectProjections(soft_max(scores, -2), soft_max(scores, -1))

    @staticmethod
    def maps(objects: ObjectProjections) -> torch.Tensor:
        """What :class:`ObjectRenderer` draws from: each channel's box, already at half resolution."""
        return objects.maps()

    @property
    def latent_dim(self) -> int:
        return self.channels * sum(self.grid)

    @property
    def map_channels(self) -> int:
        """Maps :meth:`maps` draws for :class:`ObjectRenderer`: one per channel."""
        return self.channels


CELL_KERNELS = ("box", "tent")


def cell_assignment(size: int, cells: int, kernel: str = "box") -> torch.Tensor:
    """``(cells, size)``: how much of pixel ``i`` of a side of ``size`` pixels goes to each cell; every
    column sums to one, so the cells hold the whole foreground.

    ``box``: one-hot, pixel ``i`` lies in cell ``i * cells // size`` (cells differ in size by at most one
    pixel when ``cells`` does not divide ``size``); a place is known to a cell's width.
    ``tent``: linear interpolation between the two nearest cell centres (pixels beyond the outer centres go
    to the outer cell), so where an object lies between two centres survives as how it splits between
    them, to a fraction of a pixel, in as many numbers.
    """
    if kernel not in CELL_KERNELS:
        raise ValueError(f"cell kernel must be one of {CELL_KERNELS}, got {kernel!r}")
    if kernel == "box":
        owner = torch.arange(size) * cells // size
        return (owner[None, :] == torch.arange(cells)[:, None]).float()
    # each pixel centre in units of cell centres (cell g's centre is at g), kept between the outer centres
    place = ((torch.arange(size, dtype=torch.float64) + 0.5) * cells / size - 0.5).clamp(0, cells - 1)
    distance = (place[None, :] - torch.arange(cells, dtype=torch.float64)[:, None]).abs()
    return (1.0 - distance).clamp(min=0.0).float()


def weighted_moments(weights: torch.Tensor, coords: torch.Tensor, mass: torch.Tensor,
                     eps: float = 1e-3) -> tuple[torch.Tensor, torch.Tensor]:
    """Centre and spread (standard deviation) of ``weights`` (..., L) placed at ``coords`` (L,) with total
    ``mass`` (...). Dividing by ``mass + eps`` keeps an empty part finite (centre 0, spread ~1e-3); it also
    pulls the centre of a part far lighter than ``eps`` towards 0 and widens its spread, which is why ``eps``
    is small next to one pixel of foreground (up to 1 per colour channel)."""
    centre = (weights * coords).sum(-1) / (mass + eps)
    variance = (weights * (coords - centre[..., None]).pow(2)).sum(-1) / (mass + eps)
    return centre, variance.add(1e-6).sqrt()


class ForegroundProjections(nn.Module):
    """Frames ``(N, C, H, W)`` -> the projections of their foreground at full resolution, one channel.

    The foreground is each pixel's distance from the static background (the training data's median frame,
    set by pretraining and kept in the weights), summed over colour channels; ``x`` holds its column sums and
    ``y`` its row sums, ``H + W`` numbers per frame. Nothing is learned and nothing is dropped: every
    object, however small, adds its intensity to its rows and columns, and sums (not maxima) stay linear
    in the pixels, so how a one-pixel ball splits its intensity between two columns (its sub-pixel place)
    survives too.

    Sums along the axes lose which column goes with which row: Breakout's ball and the holes in the wall
    above it add up in the same columns. With ``cells = G > 0`` the foreground is also summed over a
    ``G x G`` grid of cells (each pixel shared out among the cells, so the cells too hold the whole
    foreground): places in two dimensions, so a policy sees the ball apart from the wall without having to
    learn to untangle the sums. ``G * G`` more numbers per frame. ``cell_kernel="box"`` puts each pixel in
    one cell (places to a cell's width); ``"tent"`` splits it between the nearest cell centres
    (:func:`cell_assignment`), so the cells alone keep an object's place to a fraction of a pixel.

    A distance is not additive. Breakout's ball is as bright as the red bricks: where it crosses a hole it has
    knocked in the wall, its distance from the background (the intact wall) is 0, less than the empty hole's,
    so in the cells it vanishes there, or shows as a dip. With ``signed_cells`` the cells sum the frame minus
    the background instead, which is linear in the frame: an object adds its own intensity to its cells in
    front of anything, a hole counts as the bricks it lacks, and no cell exceeds its pixels' full intensity.

    Objects that share a row or a column add up there: Pong's two paddles fill the same rows, and the sums
    cannot say which paddle is the agent's. With ``num_parts > 0`` a learned partition tells them apart.
    A small conv net plus a learned prior over locations shares each 2x2 block of foreground out among
    ``num_parts`` parts and a "rest"; each part is handed on as five numbers, its mass, centre and spread
    (``PART_STATS``, coordinates in [-1, 1], moments taken at full resolution), and the decoder draws it
    back as a Gaussian blob beside the rank-one picture of the sums. The rank-one picture of two objects
    draws ghosts at their crossed rows and columns, which blobs of separate parts remove, so reconstruction
    pays the partition for putting separate objects in separate parts; an untrained partition is an even
    split, every part the whole foreground. Limits: the net sees a 4x4-pixel patch per block, so what
    looks alike locally (Pong's two paddles) is told apart by the location prior alone, and two objects
    inside one 2x2 block share its shares.
    """

    channels = 1
    name = "foreground"

    def __init__(self, in_channels: int, input_hw: tuple[int, int], num_parts: int = 0, hidden: int = 8,
                 temperature: float = 0.1, cells: int = 0, sums: bool = True, cell_kernel: str = "box",
                 signed_cells: bool = False) -> None:
        super().__init__()
        self.frame_hw = (int(input_hw[0]), int(input_hw[1]))
        self.sums = bool(sums)
        self.grid = self.frame_hw if self.sums else (0, 0)
        """Lengths of the row and column projections: the frame's, or none without ``sums``."""
        self.num_parts = int(num_parts)
        self.cells = int(cells)
        if not 0 <= self.cells <= min(self.frame_hw):
            raise ValueError(f"cells must be between 0 and the frame's smaller side ({min(self.frame_hw)}), "
                             f"got {cells}")
        if not (self.sums or self.cells or self.num_parts):
            raise ValueError("a foreground path without sums needs cells or parts: set sums=True, cells > 0 "
                             "or num_parts > 0")
        self.cell_kernel = cell_kernel
        self.signed_cells = bool(signed_cells)
        if self.signed_cells and not self.cells:
            raise ValueError("signed_cells needs cells > 0")
        if self.cells:
            # how each row and each column shares out among the cells: (cells, H) and (cells, W)
            for name, size in (("cell_rows", self.frame_hw[0]), ("cell_cols", self.frame_hw[1])):
                self.register_buffer(name, cell_assignment(size, self.cells, cell_kernel), persistent=False)
        # a sharp softmax: at the usual learning rate (1e-3) a location's scores move by ~1e-3 a step, so
        # unscaled a clean partition would take tens of thousands of steps; divided by 0.1, a few thousand
        self.temperature = temperature
        if self.num_parts < 0:
            raise ValueError(f"num_parts must be >= 0, got {num_parts}")
        self.register_buffer("background", torch.zeros(in_channels, *self.frame_hw))
        if self.num_parts:
            height, width = self.frame_hw
            self.part_net = nn.Sequential(
                nn.Conv2d(in_channels, hidden, 4, 2, 1), nn.ReLU(inplace=True),
                nn.Conv2d(hidden, self.num_parts + 1, 1),
            )
            # start from an even split: a random net's sharp softmax would hand whole objects to one part
            # and leave others empty, saturated, with no gradient to ever fill them
            nn.init.zeros_(self.part_net[-1].weight)
            nn.init.zeros_(self.part_net[-1].bias)
            self.part_prior = nn.Parameter(torch.zeros(self.num_parts + 1, *object_grid(self.frame_hw)))
            # pixel centres in [-1, 1] (draw_parts averages neighbours for the renderer's half resolution)
            self.register_buffer("coords_x", torch.linspace(-1.0, 1.0, width), persistent=False)
            self.register_buffer("coords_y", torch.linspace(-1.0, 1.0, height), persistent=False)

    @property
    def latent_dim(self) -> int:
        return sum(self.grid) + self.num_parts * PART_STATS + self.cells ** 2

    @property
    def map_channels(self) -> int:
        """Maps :meth:`maps` draws for the renderer: the sums' rank-one picture, one blob per part, then the
        cells' picture."""
        return int(self.sums) + self.num_parts + (1 if self.cells else 0)

    def foreground(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, 1, H, W)``: each pixel's distance from the background, summed over colour channels."""
        foreground = (x - self.background).abs()
        return foreground.sum(1, keepdim=True) if foreground.shape[1] > 1 else foreground

    def difference(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, 1, H, W)``: each pixel minus the background, summed over colour channels (``signed_cells``)."""
        return (x - self.background).sum(1, keepdim=True)

    def forward(self, x: torch.Tensor) -> ObjectProjections:
        foreground = self.foreground(x) if self.sums or self.num_parts or not self.signed_cells else None
        parts = self.part_statistics(x, foreground) if self.num_parts else None
        cells = None
        if self.cells:
            summed = self.difference(x) if self.signed_cells else foreground
            cells = self.cell_rows @ summed[:, 0] @ self.cell_cols.T
        if not self.sums:
            nothing = x.new_zeros(len(x), 1, 0)
            return ObjectProjections(nothing, nothing, parts, cells)
        return ObjectProjections(foreground.sum(-2), foreground.sum(-1), parts, cells)

    def cell_shares(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, num_parts, ceil(H/2), ceil(W/2))`` for frames ``x``: each part's share of every 2x2 block of
        pixels (the "rest" takes what is left); an odd last row or column, a block of its own, repeats its
        neighbour's shares."""
        scores = (self.part_net(x - self.background) + self.part_prior) / self.temperature
        shares = torch.softmax(scores, dim=1)[:, : self.num_parts]
        height, width = self.frame_hw
        pad = (0, -(-width // 2) - shares.shape[-1], 0, -(-height // 2) - shares.shape[-2])
        return F.pad(shares, pad, mode="replicate") if any(pad) else shares

    def part_shares(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, num_parts, H, W)``: each pixel's share in each part, for frames ``x``."""
        height, width = self.frame_hw
        shares = self.cell_shares(x)
        return shares.repeat_interleave(2, -2).repeat_interleave(2, -1)[..., :height, :width]

    def part_statistics(self, x: torch.Tensor, foreground: torch.Tensor) -> torch.Tensor:
        """``(N, num_parts, PART_STATS)`` for frames ``x`` and their :meth:`foreground`: mass, centre x, centre y,
        spread x, spread y of each part."""
        shares = self.cell_shares(x)
        n, _, cells_y, cells_x = shares.shape
        height, width = self.frame_hw
        # every pixel weighted by its block's shares: the foreground viewed as 2x2 blocks rather than the
        # shares upsampled (the same numbers, faster)
        pad = (0, 2 * cells_x - width, 0, 2 * cells_y - height)
        blocks = (F.pad(foreground, pad) if any(pad) else foreground).view(n, 1, cells_y, 2, cells_x, 2)
        weights = shares[:, :, :, None, :, None] * blocks
        # moments from the part's own projections, at full resolution so a small part keeps its sub-pixel place
        along_x = weights.sum((2, 3)).flatten(-2)[..., :width]
        along_y = weights.sum((4, 5)).flatten(-2)[..., :height]
        mass = along_x.sum(-1)
        centre_x, spread_x = weighted_moments(along_x, self.coords_x, mass)
        centre_y, spread_y = weighted_moments(along_y, self.coords_y, mass)
        return torch.stack([mass, centre_x, centre_y, spread_x, spread_y], dim=-1)

    def maps(self, objects: ObjectProjections) -> torch.Tensor:
        """What :class:`ObjectRenderer` draws from, at half resolution: the foreground's best rank-one picture
        ``y x^T / mass`` (exact for one uniform box; with ``sums``), a Gaussian blob of each part holding its
        mass, then the cells' picture (:meth:`draw_cells`), in that order, as many as :attr:`map_channels`."""
        maps = []
        if self.sums:
            mass = objects.x.sum(-1, keepdim=True).unsqueeze(-1).clamp(min=1e-3)
            maps.append(F.avg_pool2d(objects.maps() / mass, 2))
        if objects.parts is not None:
            maps.append(self.draw_parts(objects.parts, (self.frame_hw[0] // 2, self.frame_hw[1] // 2)))
        if objects.cells is not None:
            maps.append(self.draw_cells(objects.cells))
        return maps[0] if len(maps) == 1 else torch.cat(maps, dim=1)

    def draw_cells(self, cells: torch.Tensor) -> torch.Tensor:
        """``(N, 1, H // 2, W // 2)``: each cell's mass spread back over its pixels in the shares it took from
        them (evenly for box cells), average-pooled to the renderer's half resolution (so it holds the
        mass / 4, as the pooled foreground does)."""
        area = self.cell_rows.sum(1)[:, None] * self.cell_cols.sum(1)[None, :]
        density = self.cell_rows.T @ (cells / area) @ self.cell_cols
        return F.avg_pool2d(density[:, None], 2)

    def draw_parts(self, parts: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
        """``(N, P, h, w)`` Gaussian blobs at each part's centre with its spread, each summing to its mass
        as the half-resolution (average-pooled) foreground does."""
        # the half-resolution pixel centres are averages of full-resolution ones
        grid_x = F.avg_pool1d(self.coords_x[None, None], 2)[0, 0, : hw[1]]
        grid_y = F.avg_pool1d(self.coords_y[None, None], 2)[0, 0, : hw[0]]
        mass, centre_x, centre_y, spread_x, spread_y = parts.unbind(-1)
        # a blob is never narrower than a pixel (2 / (n - 1) in [-1, 1] coordinates)
        pixel_y, pixel_x = (2.0 / max(n - 1, 1) for n in self.frame_hw)
        along_x = -0.5 * ((grid_x - centre_x[..., None]) / spread_x.clamp(min=pixel_x)[..., None]).pow(2)
        along_y = -0.5 * ((grid_y - centre_y[..., None]) / spread_y.clamp(min=pixel_y)[..., None]).pow(2)
        blobs = torch.exp(along_y[..., :, None] + along_x[..., None, :])
        scale = mass.clamp(min=0.0) / 4.0 / blobs.sum((-2, -1)).clamp(min=1e-6)
        return blobs * scale[..., None, None]


class ObjectRenderer(nn.Module):
    """Object maps at half resolution (an object encoder's ``maps``) -> logits ``(N, C, H, W)`` to add to the
    decoder's.

    Convolutions run at half resolution and a pixel shuffle doubles it: on a CPU this is several times
    faster than a transposed convolution to full size.
    """

    def __init__(self, channels: int, out_channels: int, output_hw: tuple[int, int], hidden: int = 16) -> None:
        super().__init__()
        self.output_hw = tuple(output_hw)
        self.net = nn.Sequential(
            nn.Conv2d(channels, hidden, 3, 1, 1), nn.ReLU(inplace=True),
            nn.Conv2d(hidden, 4 * out_channels, 3, 1, 1), nn.PixelShuffle(2),
        )

    def forward(self, maps: torch.Tensor) -> torch.Tensor:
        logits = self.net(maps)
        # odd input sizes: the last row / column repeats its neighbour
        height, width = self.output_hw
        pad = (0, width - logits.shape[-1], 0, height - logits.shape[-2])
        return F.pad(logits, pad, mode="replicate") if any(pad) else logits
