"""Object paths: where the small things are, in numbers a linear layer can read.

Two paths, either of which a VAE can carry beside its Gaussian latent:

* :class:`ForegroundProjections` (the default): the column and row sums of the frame's distance from the
  static background. Nothing learned, nothing dropped; see its docstring.
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


class ObjectProjections(NamedTuple):
    x: torch.Tensor  # (N, K, W') smooth max over rows of each channel's detection map
    y: torch.Tensor  # (N, K, H') smooth max over columns

    def flatten(self) -> torch.Tensor:
        """``(N, K * (W' + H'))``: per channel the column projection, then the row projection."""
        return torch.cat([self.x, self.y], dim=-1).flatten(1)

    def maps(self) -> torch.Tensor:
        """``(N, K, H', W')`` outer products ``y x^T``: for a single object, its bounding box."""
        return self.y.unsqueeze(-1) * self.x.unsqueeze(-2)

    @classmethod
    def zeros(cls, n: int, channels: int, grid: tuple[int, int], like: torch.Tensor) -> ObjectProjections:
        """Projections of ``n`` frames with nothing in them."""
        height, width = grid
        return cls(like.new_zeros(n, channels, width), like.new_zeros(n, channels, height))

    @classmethod
    def unflatten(cls, flat: torch.Tensor, channels: int, grid: tuple[int, int]) -> ObjectProjections:
        """Inverse of :meth:`flatten`."""
        height, width = grid
        parts = flat.reshape(-1, channels, width + height)
        return cls(parts[..., :width], parts[..., width:])


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


class ForegroundProjections(nn.Module):
    """Frames ``(N, C, H, W)`` -> the projections of their foreground at full resolution, one channel.

    The foreground is each pixel's distance from the static background (the training data's median frame,
    set by pretraining and kept in the weights), summed over colour channels; ``x`` holds its column sums and
    ``y`` its row sums, ``H + W`` numbers per frame. Nothing is learned and nothing is dropped: every
    object, however small, adds its intensity to its rows and columns, and sums (not maxima) stay linear
    in the pixels, so how a one-pixel ball splits its intensity between two columns (its sub-pixel place)
    survives too. Objects that share a row or a column add up there; the Gaussian latent beside these
    numbers is free to encode which is which.
    """

    channels = 1
    name = "foreground"

    def __init__(self, in_channels: int, input_hw: tuple[int, int]) -> None:
        super().__init__()
        self.grid = (int(input_hw[0]), int(input_hw[1]))
        self.register_buffer("background", torch.zeros(in_channels, *self.grid))

    @property
    def latent_dim(self) -> int:
        return sum(self.grid)

    def forward(self, x: torch.Tensor) -> ObjectProjections:
        foreground = (x - self.background).abs()
        if foreground.shape[1] > 1:
            foreground = foreground.sum(1, keepdim=True)
        return ObjectProjections(foreground.sum(-2), foreground.sum(-1))

    @staticmethod
    def maps(objects: ObjectProjections) -> torch.Tensor:
        """The foreground's best rank-one picture ``y x^T / mass`` (exact for one uniform box), at half resolution
        for :class:`ObjectRenderer`."""
        mass = objects.x.sum(-1, keepdim=True).unsqueeze(-1).clamp(min=1e-3)
        return F.avg_pool2d(objects.maps() / mass, 2)


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
