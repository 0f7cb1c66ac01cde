"""A short video of the agent playing: the frame it sees, and beside it the encoder's reconstruction of that frame."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.vec_env import VecEnv

from agents.rl.observations import Observations
from vaerl.evaluation.video import save_video


def record_play(
    model: BaseAlgorithm,
    env: VecEnv,
    observations: Observations,
    path: Path,
    *,
    steps: int,
    fps: int = 30,
    scale: int = 3,
) -> dict[str, Any]:
    """Play ``steps`` agent steps in ``env`` (one env) and write ``[frame | reconstruction]`` frames to ``path``.

    A ``.mp4`` path becomes a GIF beside it where no MP4 writer is installed (see :func:`save_video`).
    """
    if not observations.filmed:
        return {}
    obs = env.reset()
    images, total = [], 0.0
    for _ in range(steps):
        frame, recon = observations.view(model, env, obs)
        images.append(_compose(frame, recon, scale))
        action, _ = model.predict(obs, deterministic=True)
        obs, rewards, _, _ = env.step(action)
        total += float(rewards[0])
    written = save_video(path, np.stack(images), fps)
    return {"steps": steps, "reward": total, "path": written.name}


def _compose(frame: np.ndarray, recon: np.ndarray | None, scale: int) -> np.ndarray:
    panels = [_rgb(frame)]
    if recon is not None:
        panels += [np.full((frame.shape[1], 2, 3), 255, np.uint8), _rgb(np.clip(recon * 255 + 0.5, 0, 255))]
    image = np.concatenate(panels, axis=1)
    return image.repeat(scale, axis=0).repeat(scale, axis=1)


def _rgb(chw: np.ndarray) -> np.ndarray:
    hwc = np.asarray(chw).astype(np.uint8).transpose(1, 2, 0)
    return np.repeat(hwc, 3, axis=2) if hwc.shape[2] == 1 else hwc[..., :3]
