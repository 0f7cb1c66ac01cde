"""Collect preprocessed frames from any gymnasium env into a :class:`FrameDataset`."""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
from tqdm.auto import tqdm

from vaerl.data.dataset import META, FrameDataset, FrameDatasetWriter
from vaerl.errors import DatasetError
from vaerl.preprocessing import PreprocessSpec

log = logging.getLogger(__name__)

Policy = Callable[[Any], Any]
"""Maps one raw observation to one action (a trained agent: ``lambda obs: model.predict(obs)[0]``)."""

EXTRAS = ("ram", "action", "reward")


def get_ram(env: gym.Env) -> np.ndarray:
    """The emulator RAM of an ALE env (or of any env whose unwrapped form has ``get_ram()``)."""
    base = env.unwrapped
    if hasattr(base, "ale"):
        return base.ale.getRAM()
    if hasattr(base, "get_ram"):
        return np.asarray(base.get_ram(), dtype=np.uint8)
    raise DatasetError(f"{base.__class__.__name__} exposes no RAM: drop 'ram' from the extras to collect")


def collect_frames(
    env: gym.Env,
    spec: PreprocessSpec,
    num_frames: int,
    path: str | Path,
    *,
    policy: Policy | None = None,
    seed: int = 0,
    extras: Sequence[str] = (),
    shard_size: int = 50_000,
    info: dict[str, Any] | None = None,
    progress: bool = True,
) -> FrameDataset:
    """Run ``policy`` (uniform random actions by default) and store ``num_frames`` preprocessed frames.

    Each stored frame ``t`` is paired with the action taken from it and the reward that followed,
    and with the RAM at frame ``t`` when ``"ram"`` is in ``extras``.
    """
    unknown = set(extras) - set(EXTRAS)
    if unknown:
        raise DatasetError(f"unknown extras {sorted(unknown)}: choose from {EXTRAS}")
    spec.check_space(env.observation_space)
    env.action_space.seed(seed)
    extra_specs = _extra_specs(env, extras)
    writer = FrameDatasetWriter(path, spec.frame_shape, extra_specs, shard_size,
                                info={**(info or {}), "spec": spec.to_dict(), "seed": seed})
    with writer, tqdm(total=num_frames, desc="collect frames", unit="frame", disable=not progress) as bar:
        obs, _ = env.reset(seed=seed)
        episode = 0
        for _ in range(num_frames):
            frame = spec(_batch_of_one(obs))
            action = policy(obs) if policy is not None else env.action_space.sample()
            ram = get_ram(env) if "ram" in extras else None
            obs, reward, terminated, truncated, _ = env.step(action)
            values = {"ram": ram, "action": action, "reward": reward}
            writer.add(frame, episode, **{name: values[name] for name in extras})
            if terminated or truncated:
                obs, _ = env.reset()
                episode += 1
            bar.update(1)
        writer.close()
    return FrameDataset(path)


def ensure_dataset(
    root: str | Path,
    env_factory: Callable[[], gym.Env],
    spec: PreprocessSpec,
    num_frames: int,
    *,
    key: dict[str, Any],
    seed: int = 0,
    extras: Sequence[str] = (),
    policy: Policy | None = None,
    shard_size: int = 50_000,
    progress: bool = True,
) -> FrameDataset:
    """Reuse the dataset that ``key`` (env config, spec, size, seed) identifies, or collect it.

    ``key`` is hashed into the folder name, so changing any collection setting collects anew
    rather than silently training on mismatching frames.
    """
    path = Path(root) / dataset_name(key, spec, num_frames, seed, extras)
    if (path / META).exists():
        dataset = FrameDataset(path)
        if dataset.frame_shape != spec.frame_shape:
            raise DatasetError(f"dataset {path} holds frames {dataset.frame_shape}, the encoder needs "
                               f"{spec.frame_shape}: delete the folder or change the preprocessing")
        log.info("reusing dataset %s (%d frames, %d episodes)", path, len(dataset), dataset.meta.num_episodes)
        return dataset
    log.info("collecting %d frames into %s", num_frames, path)
    env = env_factory()
    try:
        return collect_frames(env, spec, num_frames, path, policy=policy, seed=seed, extras=extras,
                              shard_size=shard_size, info={"key": key}, progress=progress)
    finally:
        env.close()


def dataset_name(key: dict[str, Any], spec: PreprocessSpec, num_frames: int, seed: int, extras: Sequence[str]) -> str:
    blob = json.dumps({"key": key, "spec": spec.to_dict(), "extras": sorted(extras)}, sort_keys=True, default=str)
    digest = hashlib.sha1(blob.encode()).hexdigest()[:8]
    c, h, w = spec.frame_shape
    return f"{key.get('name', 'env')}-{c}x{h}x{w}-{num_frames}-seed{seed}-{digest}"


def _extra_specs(env: gym.Env, extras: Sequence[str]) -> dict[str, tuple[str, tuple[int, ...]]]:
    specs: dict[str, tuple[str, tuple[int, ...]]] = {}
    if "ram" in extras:
        specs["ram"] = ("uint8", get_ram_shape(env))
    if "action" in extras:
        space = env.action_space
        specs["action"] = (str(space.dtype or np.int64), tuple(space.shape or ()))
    if "reward" in extras:
        specs["reward"] = ("float32", ())
    return specs


def get_ram_shape(env: gym.Env) -> tuple[int, ...]:
    env.reset()
    return tuple(get_ram(env).shape)


def _batch_of_one(obs: Any) -> Any:
    if isinstance(obs, dict):
        return {k: np.asarray(v)[None] for k, v in obs.items()}
    return np.asarray(obs)[None]
