"""Latent observations for a single gymnasium env."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

from vaerl.encoder import Encoder
from vaerl.observations import batch_of_one
from vaerl.wrappers.core import LatentPipeline

_START, _CONTINUE = np.array([True]), np.array([False])


class LatentObservation(gym.Wrapper, gym.utils.RecordConstructorArgs):
    """Replace image observations by the encoder's latents (``Box(float32)`` or ``MultiDiscrete``).

    The encoder's saved preprocessing (image key, layout, resize, gray, frame stack) is applied to
    every observation; with ``stack > 1`` the observation is the last ``stack`` latents, so a
    policy can see motion. Histories restart at every ``reset``.

    Example:
        >>> env = LatentObservation(gym.make("vaerl/FakeFrames-v0"), vaerl.load_encoder("encoder.safetensors"))
    """

    def __init__(
        self, env: gym.Env, encoder: Encoder, *, mode: str = "mean", stack: int = 1, stack_mode: str = "concat"
    ) -> None:
        gym.utils.RecordConstructorArgs.__init__(self, encoder=encoder, mode=mode, stack=stack, stack_mode=stack_mode)
        gym.Wrapper.__init__(self, env)
        self.pipeline = LatentPipeline(encoder, 1, mode, stack, stack_mode)
        self.pipeline.check_space(env.observation_space)
        self.observation_space = self.pipeline.single_observation_space

    @property
    def encoder(self) -> Encoder:
        return self.pipeline.encoder

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict]:
        obs, info = self.env.reset(seed=seed, options=options)
        self.pipeline.seed(seed)
        return self._latent(obs, _START), info

    def step(self, action: Any) -> tuple[np.ndarray, Any, bool, bool, dict]:
        obs, reward, terminated, truncated, info = self.env.step(action)
        return self._latent(obs, _CONTINUE), reward, terminated, truncated, info

    def _latent(self, obs: Any, starts: np.ndarray) -> np.ndarray:
        return self.pipeline.step(batch_of_one(obs), starts)[0][0]
