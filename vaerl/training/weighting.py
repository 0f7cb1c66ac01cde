"""Pixel weights that keep small moving objects in the reconstruction loss.

A ball of a few pixels contributes almost nothing to a summed reconstruction error, so a plain VAE
learns to paint the background and drops it (AtariARI measured a VAE's Breakout ball-position
probe at F1 ~0.01). Pixels that differ from the dataset's median frame (the static background) are
up-weighted, so the loss pays for the ball, the paddle and the changing bricks. ``weighting=motion`` also
up-weights the pixels that changed since the previous frame of the episode: a moving object's pixels count
twice, where the wall's holes and the score (foreground that stands still) count once.
"""

from __future__ import annotations

import numpy as np
import torch

from vaerl.data.dataset import FrameDataset
from vaerl.data.loader import frames_followed_in_episode
from vaerl.errors import ConfigError


def median_frame(dataset: FrameDataset, indices: np.ndarray, num_frames: int = 2000, seed: int = 0) -> np.ndarray:
    """Per-pixel median of up to ``num_frames`` frames drawn from ``indices``: the static background."""
    rng = np.random.default_rng(seed)
    picks = np.sort(rng.choice(indices, size=min(num_frames, len(indices)), replace=False))
    return np.median(dataset.frames(picks), axis=0).astype(np.uint8)


class ForegroundWeighting:
    """``w = 1 + (weight - 1) * [|x - background| > threshold]`` per pixel.

    ``background`` is one preprocessed frame ``(c, H, W)`` uint8; it is tiled over stacked frames.
    """

    def __init__(self, background: np.ndarray, weight: float, threshold: float, frame_stack: int, device: torch.device):
        bg = torch.from_numpy(np.tile(background, (frame_stack, 1, 1))).float().div(255.0)
        self.background = bg.to(device)[None]
        self.weight, self.threshold = weight, threshold

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        foreground = (x - self.background).abs() > self.threshold
        return 1.0 + (self.weight - 1.0) * foreground.float()


def motion_weights(foreground: torch.Tensor, x: torch.Tensor, previous: torch.Tensor, weight: float,
                   threshold: float) -> torch.Tensor:
    """``foreground`` weights (:class:`ForegroundWeighting`) plus ``weight - 1`` wherever ``x`` differs from
    ``previous`` (the episode's frame before, same shape) by more than ``threshold``: where an object is and where
    it was."""
    moved = (x - previous).abs() > threshold
    return foreground + (weight - 1.0) * moved.float()


def require_frame_order(dataset: FrameDataset) -> None:
    """``weighting=motion`` compares each frame with the one before it in its episode: stop before training when
    no frame of ``dataset`` has one (every episode a single frame, frames stored without their order)."""
    if len(frames_followed_in_episode(dataset, np.arange(len(dataset)), 1)) == 0:
        raise ConfigError(f"weighting=motion weighs the pixels that changed since the previous frame of an episode, "
                          f"and no frame of dataset {dataset.path} has one (each of its {len(dataset)} episodes is a "
                          "single frame): use weighting=background, or collect frames in episode order")
