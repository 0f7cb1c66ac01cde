"""Collect frames from many envs at once: ale-py's multithreaded vector env, or any gymnasium vector env.

A random policy on one env steps Breakout at a few thousand frames/s; ale-py's ``AtariVectorEnv`` runs
its games on a C++ thread pool, and gymnasium's ``AsyncVectorEnv`` runs any env in several processes.
Frames of each env are buffered until its episode ends and then written as one contiguous episode, so the
dataset keeps the layout :class:`~vaerl.data.dataset.FrameDataset` relies on (episodes stored
contiguously, whole episodes held out for validation, frame stacks that never cross an episode).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from vaerl.data.dataset import FrameDataset, FrameDatasetWriter
from vaerl.envs import EnvConfig, make_env
from vaerl.errors import DatasetError
from vaerl.preprocessing import PreprocessSpec
from vaerl.progress import progress_bar

log = logging.getLogger(__name__)

VECTOR_EXTRAS = ("action", "reward")
"""Per-frame arrays a vector env can record (vector envs expose no emulator RAM)."""


def vector_extras(extras: Sequence[str]) -> list[str]:
    """``extras`` without ``ram`` (with a log line): vector envs expose no emulator RAM."""
    if "ram" in extras:
        log.info("collecting with a vector env: frames without the 'ram' extra (data.num_envs=1 records it)")
    return [name for name in extras if name != "ram"]


def frame_source(config: EnvConfig, num_envs: int, seed: int) -> Callable[[], gym.Env | gym.vector.VectorEnv]:
    """What :func:`~vaerl.data.collect.ensure_dataset` collects from: one env, or ``num_envs`` at once."""
    if num_envs == 1:
        return lambda: make_env(config, seed=seed)
    return lambda: frame_vector_env(config, num_envs)


def frame_vector_env(config: EnvConfig, num_envs: int) -> gym.vector.VectorEnv:
    """``num_envs`` copies of ``config``'s env whose single observations equal :func:`make_env`'s.

    Atari games run on ale-py's thread pool (frames pixel-identical to ``make_env``); any other env runs
    in ``num_envs`` processes. Both reset a finished env within the same step (``info["final_obs"]``).
    """
    if num_envs < 1:
        raise DatasetError(f"data.num_envs={num_envs}: collect with at least one env")
    if config.is_atari:
        from vaerl.envs.vector import AtariVecEnv

        return _SingleFrames(AtariVecEnv(config, num_envs, frame_stack=1).ale)  # the C++ env, set up as make_env
    return gym.vector.AsyncVectorEnv([lambda: make_env(config) for _ in range(num_envs)],
                                     autoreset_mode=gym.vector.AutoresetMode.SAME_STEP)


def collect_vector_frames(
    envs: gym.vector.VectorEnv,
    spec: PreprocessSpec,
    num_frames: int,
    path: str | Path,
    *,
    seed: int = 0,
    extras: Sequence[str] = (),
    shard_size: int = 50_000,
    info: dict[str, Any] | None = None,
    progress: bool = True,
) -> FrameDataset:
    """Store ``num_frames`` preprocessed frames of uniform random play in ``envs``.

    ``envs`` must reset finished envs within the step (``AutoresetMode.SAME_STEP``, as
    :func:`frame_vector_env` builds them). As with :func:`~vaerl.data.collect.collect_frames`, each frame
    ``t`` is stored with the action taken from it and the reward that followed.
    """
    unsupported = set(extras) - set(VECTOR_EXTRAS)
    if unsupported:
        raise DatasetError(f"a vector env can record {VECTOR_EXTRAS}, not {sorted(unsupported)}: collect with "
                           "data.num_envs=1 for those, or drop them from data.extras")
    if envs.metadata.get("autoreset_mode") != gym.vector.AutoresetMode.SAME_STEP:
        raise DatasetError("collect_vector_frames needs a vector env with autoreset_mode=SAME_STEP "
                           "(frame_vector_env builds one)")
    spec.check_space(envs.single_observation_space)
    n = envs.num_envs
    extra_specs = episode_extra_specs(envs.single_action_space, extras)
    writer = FrameDatasetWriter(path, spec.frame_shape, extra_specs, shard_size,
                                info={**(info or {}), "spec": spec.to_dict(), "seed": seed, "num_envs": n})
    envs.action_space.seed(seed)
    episodes = EpisodeBuffers(writer, n, num_frames, extras)
    with writer, progress_bar(num_frames, f"collect frames ({n} envs)", "frame", bar=progress,
                                      logger=log) as bar:
        obs, _ = envs.reset(seed=seed)
        while episodes.collected < num_frames:
            actions = envs.action_space.sample()
            frames = spec(obs)
            obs, rewards, terminated, truncated, _ = envs.step(actions)
            episodes.add(frames, actions, rewards, terminated | truncated)
            bar.update(min(n, num_frames - bar.n))
        episodes.flush_all()
        writer.close()
    return FrameDataset(path)


def episode_extra_specs(action_space: spaces.Space, extras: Sequence[str]) -> dict[str, tuple[str, tuple[int, ...]]]:
    """The dataset arrays of ``extras`` (from :data:`VECTOR_EXTRAS`) for an env with ``action_space``."""
    specs = {"action": (str(action_space.dtype or np.int64), tuple(action_space.shape or ())),
             "reward": ("float32", ())}
    return {name: specs[name] for name in extras}


class _SingleFrames(gym.vector.VectorWrapper):
    """ale-py's frames ``(n, 1, H, W)`` as ``(n, H, W)``, the shape of :func:`make_env`'s frames.

    (gymnasium's observation wrappers refuse same-step autoreset, which the collector relies on.)
    """

    def __init__(self, env: gym.vector.VectorEnv) -> None:
        super().__init__(env)
        stacked = env.single_observation_space
        self.single_observation_space = spaces.Box(0, 255, stacked.shape[1:], stacked.dtype)
        self.observation_space = spaces.Box(0, 255, (env.num_envs, *stacked.shape[1:]), stacked.dtype)

    def reset(self, **kwargs: Any) -> tuple[np.ndarray, dict[str, Any]]:
        obs, info = self.env.reset(**kwargs)
        return obs[:, 0], info

    def step(self, actions: np.ndarray) -> tuple[Any, ...]:
        obs, *rest = self.env.step(actions)
        return (obs[:, 0], *rest)


class EpisodeBuffers:
    """Per-env buffers that reach the writer one whole episode at a time, up to ``limit`` frames in all."""

    def __init__(self, writer: FrameDatasetWriter, num_envs: int, limit: int, extras: Sequence[str]) -> None:
        self.writer, self.limit, self.extras = writer, limit, list(extras)
        self.buffers: list[dict[str, list[Any]]] = [self._empty() for _ in range(num_envs)]
        self.collected = 0  # frames seen, written or buffered
        self.written = 0
        self.next_episode = 0

    def add(self, frames: np.ndarray, actions: np.ndarray, rewards: np.ndarray, done: np.ndarray) -> None:
        for i in range(len(frames)):
            if self.collected >= self.limit:
                break
            buffer = self.buffers[i]
            buffer["frames"].append(frames[i])
            buffer["action"].append(actions[i])
            buffer["reward"].append(rewards[i])
            self.collected += 1
        for i in np.flatnonzero(done):
            self.flush(i)

    def flush(self, env: int) -> None:
        buffer, self.buffers[env] = self.buffers[env], self._empty()
        count = min(len(buffer["frames"]), self.limit - self.written)
        if count <= 0:
            return
        values = {"action": np.asarray(buffer["action"][:count]),
                  "reward": np.asarray(buffer["reward"][:count], dtype=np.float32)}
        self.writer.add(np.stack(buffer["frames"][:count]), self.next_episode, **{k: values[k] for k in self.extras})
        self.written += count
        self.next_episode += 1

    def flush_all(self) -> None:
        for env in range(len(self.buffers)):
            self.flush(env)

    @staticmethod
    def _empty() -> dict[str, list[Any]]:
        return {"frames": [], "action": [], "reward": []}
