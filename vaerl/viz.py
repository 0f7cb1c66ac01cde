"""Pictures saved as PNG, the one place that writes them: reconstructions, samples, traversals, parts."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import torch

from vaerl.io import atomic_path
from vaerl.models import FrameModel
from vaerl.models.blocks import to_unit
from vaerl.models.objects import ForegroundProjections

PART_COLOURS = np.array([[230, 25, 75], [60, 180, 75], [0, 130, 200], [245, 130, 48], [145, 30, 180],
                         [70, 240, 240], [240, 50, 230], [210, 245, 60], [0, 128, 128], [170, 110, 40]]) / 255.0
"""One colour per foreground part (cycled past ten); what no part takes is drawn grey."""


def to_display(frames: np.ndarray | torch.Tensor, channels_per_frame: int = 1) -> np.ndarray:
    """Frames ``(N, C, H, W)`` (uint8 or float in [0, 1]) -> uint8 ``(N, H, W, 3)`` showing the newest stacked frame."""
    if isinstance(frames, torch.Tensor):
        frames = frames.detach().cpu().numpy()
    frames = np.asarray(frames)
    if frames.dtype != np.uint8:
        frames = np.clip(np.rint(frames * 255.0), 0, 255).astype(np.uint8)
    frames = frames[:, -channels_per_frame:]  # last frame of a stack
    if frames.shape[1] == 1:
        frames = np.repeat(frames, 3, axis=1)
    return frames.transpose(0, 2, 3, 1)


def image_grid(rows: Sequence[np.ndarray], scale: int = 2, pad: int = 2) -> np.ndarray:
    """Tile rows of display frames ``(N, H, W, 3)`` into one uint8 image, upscaled by ``scale``."""
    n_cols = max(len(row) for row in rows)
    height, width = rows[0].shape[1:3]
    cell_h, cell_w = height * scale + pad, width * scale + pad
    grid = np.full((len(rows) * cell_h + pad, n_cols * cell_w + pad, 3), 255, np.uint8)
    for r, row in enumerate(rows):
        for c, image in enumerate(row):
            big = image.repeat(scale, axis=0).repeat(scale, axis=1)
            y, x = pad + r * cell_h, pad + c * cell_w
            grid[y:y + height * scale, x:x + width * scale] = big
    return grid


def save_png(path: str | Path, image: np.ndarray) -> Path:
    """Write a uint8 ``(H, W, 3)`` image as PNG, atomically."""
    with atomic_path(path) as tmp:
        iio.imwrite(tmp, image, extension=".png")
    return Path(path)


def save_frame_grid(path: str | Path, rows: Sequence[np.ndarray | torch.Tensor], channels_per_frame: int = 1,
                    scale: int = 2) -> Path:
    """Save rows of model frames ``(N, C, H, W)`` as one PNG grid (e.g. originals above reconstructions)."""
    return save_png(path, image_grid([to_display(row, channels_per_frame) for row in rows], scale=scale))


@torch.no_grad()
def save_reconstructions(path: str | Path, model: FrameModel, frames: torch.Tensor, channels_per_frame: int = 1,
                         scale: int = 2) -> Path:
    """Save uint8 frames ``(N, C, H, W)`` (top row) above the model's reconstructions of them (bottom row)."""
    device = next(model.parameters()).device
    recon = model.reconstruct(to_unit(frames.to(device)))
    return save_frame_grid(path, [frames, recon], channels_per_frame, scale)


def save_samples(path: str | Path, samples: np.ndarray | torch.Tensor, channels_per_frame: int = 1,
                 scale: int = 2) -> Path:
    """Save generated frames ``(N, C, H, W)`` as a grid of two rows."""
    half = (len(samples) + 1) // 2
    return save_frame_grid(path, [samples[:half], samples[half:]], channels_per_frame, scale)


@torch.no_grad()
def save_foreground_parts(path: str | Path, projections: ForegroundProjections, frames: torch.Tensor,
                          channels_per_frame: int = 1, scale: int = 2) -> Path:
    """Save uint8 frames ``(N, C, H, W)`` (top row) above their foreground coloured by part (bottom row):
    each pixel mixes its parts' colours by its shares, as bright as its foreground. With stacked frames both rows
    show the newest frame, the one the foreground path reads."""
    x = to_unit(frames[:, -projections.background.shape[0]:].to(projections.background.device))
    foreground = projections.foreground(x)[:, 0]
    foreground = (foreground / foreground.amax((-2, -1), keepdim=True).clamp(min=1e-6)).clamp(max=1.0)
    shares = projections.part_shares(x)
    shares = torch.cat([shares, (1.0 - shares.sum(1, keepdim=True)).clamp(min=0.0)], dim=1)
    palette = np.concatenate([PART_COLOURS[np.arange(projections.num_parts) % len(PART_COLOURS)], [[0.5] * 3]])
    palette = torch.as_tensor(palette, dtype=shares.dtype, device=shares.device)
    colour = torch.einsum("nphw,pc->nhwc", shares, palette)
    coloured = (colour * foreground[..., None]).clamp(0.0, 1.0).mul(255.0).round().byte().cpu().numpy()
    return save_png(path, image_grid([to_display(frames, channels_per_frame), coloured], scale=scale))
