"""Stable-Baselines3 ``VecEnv`` wrappers: latents (or preprocessed frame stacks) for all envs at once."""

from __future__ import annotations

from typing import Any

import numpy as np
from stable_baselines3.common.vec_env import VecEnv, VecEnvWrapper
from stable_baselines3.common.vec_env.base_vec_env import VecEnvStepReturn

from vaerl.encoder import Encoder
from vaerl.observations import stack_observations
from vaerl.preprocessing import PreprocessSpec
from vaerl.wrappers.core import FramePipeline, LatentPipeline


class _PipelineVecEnv(VecEnvWrapper):
    """Runs a pipeline over every step's batch, terminal observations included."""

    pipeline: FramePipeline

    def __init__(self, venv: VecEnv, pipeline: FramePipeline) -> None:
        pipeline.check_space(venv.observation_space)
        self.pipeline = pipeline
        super().__init__(venv, observation_space=pipeline.single_observation_space)
        self._all_start = np.ones(venv.num_envs, dtype=bool)

    def seed(self, seed: int | None = None) -> Any:
        self.pipeline.seed(seed)
        return self.venv.seed(seed)

    def reset(self) -> np.ndarray:
        obs = self.venv.reset()
        return self.pipeline.step(obs, self._all_start)[0]

    def step_wait(self) -> VecEnvStepReturn:
        obs, rewards, dones, infos = self.venv.step_wait()
        ended = np.flatnonzero(dones)
        with_terminal = np.array([i for i in ended if "terminal_observation" in infos[i]], dtype=np.int64)
        finals = None
        if len(with_terminal):
            finals = stack_observations([infos[i]["terminal_observation"] for i in with_terminal])
        out, final_out = self.pipeline.step(obs, np.asarray(dones, dtype=bool), finals=finals,
                                            final_indices=with_terminal)
        for j, i in enumerate(with_terminal):
            infos[i]["terminal_observation"] = final_out[j]
        return out, rewards, dones, infos


class LatentVecEnv(_PipelineVecEnv):
    """Encode the observations of every env of an SB3 ``VecEnv`` in one forward pass.

    ``info["terminal_observation"]`` is encoded too, as the continuation of its episode's history,
    so bootstrapping from truncated episodes sees the same kind of vector as the policy.
    Arguments as for :class:`~vaerl.wrappers.LatentObservation`.
    """

    pipeline: LatentPipeline

    def __init__(
        self, venv: VecEnv, encoder: Encoder, *, mode: str = "mean", stack: int = 1, stack_mode: str = "concat"
    ) -> None:
        super().__init__(venv, LatentPipeline(encoder, venv.num_envs, mode, stack, stack_mode))

    @property
    def encoder(self) -> Encoder:
        return self.pipeline.encoder

    def newest(self, index: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """Copies of env ``index``'s newest preprocessed frame ``(C, H, W)`` uint8 and of its latent ``(D,)``."""
        pipeline: LatentPipeline = self.pipeline  # type: ignore[assignment]
        return pipeline.frames.data[index, -1].copy(), pipeline.latents.data[index, -1].copy()


class PreprocessedVecEnv(_PipelineVecEnv):
    """Apply a preprocessing spec and stack ``frame_stack`` frames: ``(k*C, H, W)`` uint8 for CNN policies.

    This is the pixel side of the comparison for envs without a native vector env, and the input of
    :class:`agents.features.EncoderFeatures` when the encoder is fine-tuned inside the policy.
    """

    def __init__(self, venv: VecEnv, spec: PreprocessSpec, frame_stack: int | None = None) -> None:
        super().__init__(venv, FramePipeline(spec, venv.num_envs, frame_stack))
