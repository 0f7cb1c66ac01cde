"""Latent observations for gymnasium ``VectorEnv``s, in every autoreset mode."""

from __future__ import annotations

from typing import Any

import numpy as np
from gymnasium.vector import AutoresetMode, VectorEnv, VectorWrapper
from gymnasium.vector.utils import batch_space

from vaerl.encoder import Encoder
from vaerl.observations import stack_observations, take
from vaerl.wrappers.core import LatentPipeline


class LatentVectorEnv(VectorWrapper):
    """Encode all sub-envs' observations in one forward pass.

    Episode starts are found from the env's autoreset mode: ``NEXT_STEP`` (the step after a done
    returns the reset observation), ``SAME_STEP`` (``info["final_obs"]`` holds the last observation,
    which is encoded too) or ``DISABLED`` (``reset(options={"reset_mask": ...})``).
    Arguments as for :class:`~vaerl.wrappers.LatentObservation`.
    """

    def __init__(
        self, env: VectorEnv, encoder: Encoder, *, mode: str = "mean", stack: int = 1, stack_mode: str = "concat"
    ) -> None:
        super().__init__(env)
        self.pipeline = LatentPipeline(encoder, env.num_envs, mode, stack, stack_mode)
        self.pipeline.check_space(env.single_observation_space)
        self.single_observation_space = self.pipeline.single_observation_space
        self.observation_space = batch_space(self.single_observation_space, env.num_envs)
        self.autoreset_mode = AutoresetMode(env.metadata.get("autoreset_mode", AutoresetMode.NEXT_STEP))
        self._needs_reset = np.zeros(env.num_envs, dtype=bool)
        self._latents = np.zeros(self.observation_space.shape, self.observation_space.dtype)

    @property
    def encoder(self) -> Encoder:
        return self.pipeline.encoder

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict]:
        mask = (options or {}).get("reset_mask")  # read first: SyncVectorEnv pops it from options
        obs, info = self.env.reset(seed=seed, options=options)
        self.pipeline.seed(seed)
        indices = np.arange(self.num_envs) if mask is None else np.flatnonzero(mask)
        rows = take(obs, indices)
        self._latents[indices] = self.pipeline.step(rows, np.ones(len(indices), bool), indices)[0]
        self._needs_reset[indices] = False
        return self._latents.copy(), info

    def step(self, actions: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict]:
        obs, rewards, terminations, truncations, info = self.env.step(actions)
        done = np.logical_or(terminations, truncations)
        finals, final_indices = None, np.zeros(0, np.int64)
        if self.autoreset_mode == AutoresetMode.NEXT_STEP:
            starts, self._needs_reset = self._needs_reset, done
        elif self.autoreset_mode == AutoresetMode.SAME_STEP:
            starts = done
            if "final_obs" in info:
                final_indices = np.flatnonzero(info.get("_final_obs", done))
                finals = stack_observations([info["final_obs"][i] for i in final_indices]) if len(final_indices) else None
        else:
            starts = np.zeros(self.num_envs, dtype=bool)
        self._latents, final_latents = self.pipeline.step(obs, starts, finals=finals, final_indices=final_indices)
        if finals is not None:
            info = dict(info)
            info["final_obs"] = _like(info["final_obs"], final_indices, final_latents, self._latents)
        return self._latents.copy(), rewards, terminations, truncations, info


def _like(original: Any, indices: np.ndarray, latents: np.ndarray, current: np.ndarray) -> np.ndarray:
    """Final latents in the container the env used: an object array (gymnasium) or a dense batch (ALE)."""
    if isinstance(original, np.ndarray) and original.dtype != object:
        dense = np.zeros_like(current)
        dense[indices] = latents
        return dense
    out = np.full(len(current), None, dtype=object)
    for j, i in enumerate(indices):
        out[i] = latents[j]
    return out
