"""Any gymnasium env seen through its rendering: pixels as the observation.

``env.id=vaerl.envs.rendered:rendered env.kwargs='{env_id: CartPole-v1}'`` lets vaerl pretrain
an encoder on, and wrap, an env whose own observations are not images (classic control, Box2D,
MuJoCo with ``render_mode="rgb_array"``), through gymnasium's ``AddRenderObservation``.
"""

from __future__ import annotations

import os
from typing import Any

import gymnasium as gym
from gymnasium.wrappers import AddRenderObservation

from vaerl.errors import ConfigError


def rendered(env_id: str, render_mode: str | None = None, **kwargs: Any) -> gym.Env:
    """``gym.make(env_id, render_mode="rgb_array", **kwargs)`` whose observation is the rendered frame."""
    if render_mode not in (None, "rgb_array"):
        raise ConfigError(f"rendered envs render to rgb_array frames, got render_mode={render_mode!r}")
    # pygame-drawn envs (classic control, Box2D) initialise audio they never use; without a sound
    # device SDL prints an error line at every reset
    os.environ.setdefault("SDL_AUDIODRIVER", "dummy")
    try:
        env = gym.make(env_id, render_mode="rgb_array", **kwargs)
    except gym.error.Error as exc:
        raise ConfigError(f"cannot build env {env_id!r} to render it: {exc}") from exc
    return AddRenderObservation(env, render_only=True)
