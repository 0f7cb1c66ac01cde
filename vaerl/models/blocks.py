"""Convolutional building blocks shared by every vaerl model.

A trunk is described by a list of ``(channels, kernel, stride, padding)`` layers, so the same code
serves 64x64 and 84x84 inputs, gray, RGB and stacked frames. The decoder mirrors an encoder trunk
and uses ``ConvTranspose2d(output_size=...)`` to land exactly on the encoder's intermediate sizes,
whatever the input size.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import torch
from torch import nn

Layer = tuple[int, int, int, int]  # (out_channels, kernel, stride, padding)

# NatureCNN's trunk (Mnih et al. 2015).
NATURE_LAYERS: tuple[Layer, ...] = ((32, 8, 4, 0), (64, 4, 2, 0), (64, 3, 1, 0))
# NatureCNN's geometry at half its width: the default VAE encoder. An agent's env loop runs it at every
# step; at the 8-frame batches of 8 envs it encodes twice as fast as NatureCNN, which is what lets a
# latent env pipeline keep up with pixels on a CPU (BENCHMARKS.md), for the same ELBO.
HALF_NATURE_LAYERS: tuple[Layer, ...] = ((16, 8, 4, 0), (32, 4, 2, 0), (32, 3, 1, 0))


def as_layers(layers: Sequence[Sequence[int]]) -> tuple[Layer, ...]:
    """Validate a layer list from config: each entry is ``[channels, kernel, stride, padding]``."""
    out = []
    for layer in layers:
        if len(layer) != 4:
            raise ValueError(f"each conv layer is [channels, kernel, stride, padding], got {list(layer)}")
        out.append(tuple(int(v) for v in layer))
    return tuple(out)  # type: ignore[return-value]


def conv_output_sizes(size: tuple[int, int], layers: Sequence[Layer]) -> list[tuple[int, int]]:
    """Spatial size after each layer, starting with the input size."""
    sizes = [tuple(size)]
    for _, kernel, stride, padding in layers:
        h, w = sizes[-1]
        h, w = (h + 2 * padding - kernel) // stride + 1, (w + 2 * padding - kernel) // stride + 1
        if h < 1 or w < 1:
            raise ValueError(f"input size {size} is too small for conv layers {list(layers)}")
        sizes.append((h, w))
    return sizes  # type: ignore[return-value]


class ConvEncoderTrunk(nn.Module):
    """Strided convolutions with ReLU: ``(N, C, H, W) float -> (N, C', H', W')``."""

    def __init__(self, in_channels: int, layers: Sequence[Layer], final_activation: bool = True) -> None:
        super().__init__()
        modules: list[nn.Module] = []
        self.layer_ends: list[int] = []
        """Where each conv layer (with its activation) ends in ``net``."""
        channels = in_channels
        for i, (out_channels, kernel, stride, padding) in enumerate(layers):
            modules.append(nn.Conv2d(channels, out_channels, kernel, stride, padding))
            if final_activation or i < len(layers) - 1:
                modules.append(nn.ReLU(inplace=True))
            self.layer_ends.append(len(modules))
            channels = out_channels
        self.net = nn.Sequential(*modules)
        self.out_channels = channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def up_to(self, x: torch.Tensor, layer: int) -> torch.Tensor:
        """The feature map after conv layer ``layer`` (and its activation): finer places than the last map's."""
        return self.net[: self.layer_ends[layer]](x)


class ConvDecoderTrunk(nn.Module):
    """Transposed convolutions mirroring an encoder trunk, ending on ``out_channels`` logits/means.

    ``sizes`` are the encoder's spatial sizes (input first), so the output has the input's exact size.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        layers: Sequence[Layer],
        sizes: Sequence[tuple[int, int]],
        width_multiplier: int = 1,
    ) -> None:
        super().__init__()
        self.sizes = [tuple(s) for s in sizes]
        self.convs = nn.ModuleList()
        channels = in_channels
        reversed_layers = list(reversed(layers))
        for i, (_, kernel, stride, padding) in enumerate(reversed_layers):
            last = i == len(reversed_layers) - 1
            # the channels this layer produces are the ones its mirror image consumed in the encoder
            target = out_channels if last else reversed_layers[i + 1][0] * width_multiplier
            self.convs.append(nn.ConvTranspose2d(channels, target, kernel, stride, padding))
            channels = target

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        targets = list(reversed(self.sizes[:-1]))
        for i, conv in enumerate(self.convs):
            h = conv(h, output_size=targets[i])
            if i < len(self.convs) - 1:
                h = torch.relu(h)
        return h


def mlp(in_dim: int, hidden: Sequence[int], out_dim: int, activation: type[nn.Module] = nn.ReLU) -> nn.Sequential:
    """A plain MLP ``in_dim -> hidden... -> out_dim`` (no activation after the last layer)."""
    layers: list[nn.Module] = []
    dims = [in_dim, *hidden]
    for a, b in itertools.pairwise(dims):
        layers += [nn.Linear(a, b), activation()]
    layers.append(nn.Linear(dims[-1], out_dim))
    return nn.Sequential(*layers)


def to_unit(frames: torch.Tensor) -> torch.Tensor:
    """uint8 frames (0..255) -> float in [0, 1]; float input is assumed to be in [0, 1] already."""
    if frames.dtype == torch.uint8:
        return frames.float().div_(255.0)
    return frames.float()
