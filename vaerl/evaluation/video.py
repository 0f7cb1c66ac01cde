"""Videos: one writer for every video vaerl makes, and episodes beside their reconstructions.

MP4 is written through ``imageio-ffmpeg`` (a vaerl dependency that ships its own ffmpeg binary) or
PyAV; GIFs with Pillow, which imageio always has. :func:`write_video` writes the format its path
asks for (``.mp4`` without a backend raises ``DependencyNotInstalled``); :func:`save_video` prefers
MP4 and falls back to a GIF beside it, with a log line, where no backend is installed.
"""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import torch
from gymnasium.error import DependencyNotInstalled

from vaerl.io import atomic_path
from vaerl.models import FrameModel
from vaerl.models.blocks import to_unit
from vaerl.viz import to_display

FORMATS = ("gif", "mp4")

log = logging.getLogger(__name__)


def mp4_available() -> bool:
    """Whether imageio can write MP4 here (through imageio-ffmpeg or PyAV)."""
    return any(importlib.util.find_spec(name) is not None for name in ("imageio_ffmpeg", "av"))


def write_video(path: str | Path, frames: np.ndarray, fps: float = 15.0) -> Path:
    """Write uint8 frames ``(T, H, W, 3)`` as a looping GIF or an MP4 (chosen by the suffix), atomically."""
    path = Path(path)
    suffix = path.suffix.lower().lstrip(".")
    if suffix not in FORMATS:
        raise ValueError(f"video format must be one of {FORMATS}, got {path.name!r}")
    frames = np.asarray(frames)
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3 or len(frames) == 0:
        raise ValueError(f"expected non-empty uint8 frames (T, H, W, 3), got {frames.dtype} {frames.shape}")
    if suffix == "mp4" and not mp4_available():
        raise DependencyNotInstalled('writing MP4 needs imageio-ffmpeg or PyAV: pip install "imageio[ffmpeg]", '
                                     "or ask for a .gif")
    with atomic_path(path) as tmp:
        if suffix == "gif":
            iio.imwrite(tmp, frames, extension=".gif", duration=1000.0 / fps, loop=0)
        else:
            # H.264 in yuv420p wants even sides: pad by one pixel rather than let ffmpeg rescale
            even = np.pad(frames, ((0, 0), (0, frames.shape[1] % 2), (0, frames.shape[2] % 2), (0, 0)), mode="edge")
            # the temporary name does not end in .mp4, so name the container for ffmpeg
            iio.imwrite(tmp, even, extension=".mp4", fps=fps, macro_block_size=1, output_params=["-f", "mp4"])
    return path


def save_video(path: str | Path, frames: np.ndarray, fps: float = 15.0) -> Path:
    """Write ``frames`` at ``path``; an ``.mp4`` becomes a ``.gif`` beside it when no MP4 backend is installed.

    Returns the path written.
    """
    path = Path(path)
    if path.suffix.lower() == ".mp4" and not mp4_available():
        log.info('no MP4 writer here (pip install imageio-ffmpeg): writing %s as a GIF instead', path.name)
        path = path.with_suffix(".gif")
    return write_video(path, frames, fps)


@torch.no_grad()
def reconstruction_frames(
    model: FrameModel,
    frames: np.ndarray | torch.Tensor,
    *,
    channels_per_frame: int = 1,
    scale: int = 2,
    batch_size: int = 128,
) -> np.ndarray:
    """Video frames ``(T, H', W', 3)``: the input, its reconstruction and their absolute difference side by side.

    ``frames`` are encoder inputs, uint8 ``(T, C, H, W)``; reconstructions are decoder means.
    """
    device = next(model.parameters()).device
    frames = torch.as_tensor(frames)
    model.eval()
    recon = torch.cat([model.reconstruct(to_unit(batch.to(device))).cpu()
                       for batch in frames.split(batch_size)])
    original = to_unit(frames)
    panels = [to_display(p, channels_per_frame) for p in (original, recon, (original - recon).abs())]
    gap = np.full((len(frames), panels[0].shape[1], 2, 3), 255, np.uint8)
    video = np.concatenate([panels[0], gap, panels[1], gap, panels[2]], axis=2)
    return video.repeat(scale, axis=1).repeat(scale, axis=2)


def reconstruction_video(
    path: str | Path,
    model: FrameModel,
    frames: np.ndarray | torch.Tensor,
    *,
    channels_per_frame: int = 1,
    fps: float = 15.0,
    scale: int = 2,
) -> Path:
    """Write an episode (encoder inputs ``(T, C, H, W)``) beside its reconstruction and error as a video."""
    return write_video(path, reconstruction_frames(model, frames, channels_per_frame=channels_per_frame,
                                                   scale=scale), fps)


__all__ = ["FORMATS", "mp4_available", "reconstruction_frames", "reconstruction_video", "save_video", "write_video"]
