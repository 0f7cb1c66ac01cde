"""A video of a policy's rollouts: the env's own rendering, episode after episode."""

from __future__ import annotations

from pathlib import Path

import gymnasium as gym
import numpy as np

from vaerl.evaluation.video import save_video
from vaerl.rollout import PredictPolicy, run_episodes, seed_policy


def rollout_video(
    policy: PredictPolicy,
    env: gym.Env,
    path: str | Path,
    episodes: int,
    seed: int,
    *,
    deterministic: bool = True,
    fps: float = 15.0,
    scale: int = 4,
) -> Path | None:
    """Render ``episodes`` rollouts of ``policy`` into ``path`` (MP4, or a GIF where no MP4 writer is installed).

    ``env`` is what the policy acts in (a latent wrapper included); frames come from its
    ``render()``. Returns ``None`` when the env renders no RGB frames.
    """
    seed_policy(policy, seed)
    frames: list[np.ndarray] = []

    def render(_: object) -> np.ndarray:
        frame = env.render()
        return np.asarray(frame) if frame is not None else np.zeros((0, 0, 3), np.uint8)

    for episode in run_episodes(env, policy, episodes, seed, deterministic=deterministic, keep=render):
        frames += [*episode.observations, episode.final_observation]
    if not frames or frames[0].ndim != 3 or frames[0].size == 0:
        return None
    video = np.stack(frames).astype(np.uint8)
    return save_video(path, video.repeat(scale, axis=1).repeat(scale, axis=2), fps)


def scene_fps(env: gym.Env, default: float = 15.0) -> float:
    """The frame rate an env asks its renderings to be shown at (``metadata["render_fps"]``)."""
    return float(env.metadata.get("render_fps") or default)
