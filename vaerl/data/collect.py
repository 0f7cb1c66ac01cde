"""Collect preprocessed frames from any gymnasium env into a :class:`FrameDataset`."""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
from filelock import FileLock, Timeout

from vaerl.data.dataset import META, FrameDataset, FrameDatasetWriter
from vaerl.data.vector_collect import collect_vector_frames, vector_extras
from vaerl.errors import DatasetError
from vaerl.observations import batch_of_one
from vaerl.preprocessing import PreprocessSpec
from vaerl.progress import progress_bar
from vaerl.stop import AbandonOnStop

log = logging.getLogger(__name__)

Policy = Callable[[Any], Any]
"""Maps one raw observation to one action (a trained agent: ``lambda obs: model.predict(obs)[0]``)."""

Collector = Callable[[Path, PreprocessSpec], FrameDataset]
"""Writes a dataset of frames for the given spec at the given folder and returns it (frames from something
other than ``env_factory``'s env)."""


@dataclass(frozen=True)
class PolicyFrames:
    """Frames of a trained agent's play: ``key`` identifies the agent (it joins the dataset's key), ``collect``
    writes its frames (:func:`agents.rl.frames.agent_frames` builds one)."""

    key: dict[str, Any]
    collect: Collector

EXTRAS = ("ram", "action", "reward")


def has_ram(env: gym.Env) -> bool:
    """Whether ``env`` exposes emulator RAM (ALE games, or any env whose unwrapped form has ``get_ram()``)."""
    return hasattr(env.unwrapped, "ale") or hasattr(env.unwrapped, "get_ram")


def available_extras(env: gym.Env, extras: Sequence[str]) -> list[str]:
    """``extras`` without ``ram`` when ``env`` has none (with a log line), so one default fits every env."""
    if "ram" in extras and not has_ram(env):
        log.info("%s has no RAM: collecting frames without the 'ram' extra", type(env.unwrapped).__name__)
        return [name for name in extras if name != "ram"]
    return list(extras)


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
    and with the RAM at frame ``t`` when ``"ram"`` is in ``extras`` and the env has RAM.
    """
    unknown = set(extras) - set(EXTRAS)
    if unknown:
        raise DatasetError(f"unknown extras {sorted(unknown)}: choose from {EXTRAS}")
    extras = available_extras(env, extras)
    spec.check_space(env.observation_space)
    env.action_space.seed(seed)
    extra_specs = _extra_specs(env, extras)
    writer = FrameDatasetWriter(path, spec.frame_shape, extra_specs, shard_size,
                                info={**(info or {}), "spec": spec.to_dict(), "seed": seed})
    with writer, progress_bar(num_frames, "collect frames", "frame", bar=progress, logger=log) as bar:
        obs, _ = env.reset(seed=seed)
        episode = 0
        for _ in range(num_frames):
            frame = spec(batch_of_one(obs))
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
    num_envs: int = 1,
    collector: Collector | None = None,
) -> FrameDataset:
    """Reuse the dataset that ``key`` (env config, spec, size, seed) identifies, or collect it.

    ``key`` is hashed into the folder name, so changing any collection setting collects anew
    rather than silently training on mismatching frames. With ``num_envs > 1``, ``env_factory``
    returns a vector env of that many games played at once (:func:`~vaerl.data.vector_collect.frame_vector_env`);
    its frames differ from one env's, so ``num_envs`` joins the key. A ``collector`` replaces both ways of
    playing (a trained agent in its own env, :mod:`agents.rl.frames`); ``key`` must then say what it plays.
    """
    if num_envs > 1:
        if collector is not None:
            raise DatasetError("a trained agent plays in its own envs: leave data.num_envs at 1 with data.policy")
        if policy is not None:
            raise DatasetError("a policy plays one env: collect its frames with num_envs=1")
        key = {**key, "num_envs": num_envs}
    path = Path(root) / dataset_name(key, spec, num_frames, seed, extras)
    if (path / META).exists():
        return _reuse(path, spec)
    with collection_lock(path):  # the jobs of a sweep that want the same dataset: one collects, the rest reuse
        if (path / META).exists():
            return _reuse(path, spec)
        log.info("collecting %d frames into %s", num_frames, path)
        # a collection cannot resume half-way: a stop signal abandons it, and the writer removes its partial folder
        with AbandonOnStop(f"stopped collecting frames into {path} (nothing kept); run the same command to "
                           "collect them again"):
            if collector is not None:
                return collector(path, spec)
            env = env_factory()
            try:
                if num_envs > 1:
                    return collect_vector_frames(env, spec, num_frames, path, seed=seed,
                                                 extras=vector_extras(extras), shard_size=shard_size,
                                                 info={"key": key}, progress=progress)
                return collect_frames(env, spec, num_frames, path, policy=policy, seed=seed, extras=extras,
                                      shard_size=shard_size, info={"key": key}, progress=progress)
            finally:
                env.close()


def _reuse(path: Path, spec: PreprocessSpec) -> FrameDataset:
    dataset = FrameDataset(path)
    if dataset.frame_shape != spec.frame_shape:
        raise DatasetError(f"dataset {path} holds frames {dataset.frame_shape}, the encoder needs "
                           f"{spec.frame_shape}: delete the folder or change the preprocessing")
    log.info("reusing dataset %s (%d frames, %d episodes)", path, len(dataset), dataset.meta.num_episodes)
    return dataset


@contextlib.contextmanager
def collection_lock(path: Path) -> Iterator[None]:
    """Hold ``<path>.lock`` (an OS file lock, released if the holder dies) while ``path`` is collected.

    Where the filesystem has no locks, collection goes ahead unlocked: publishing is an atomic rename
    and a second copy of the same dataset is dropped, so the worst case is collecting twice.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(path.with_name(f"{path.name}.lock"))
    try:
        try:
            lock.acquire(timeout=0)
        except Timeout:
            log.info("another process is collecting %s; waiting for it to finish", path)
            lock.acquire()
    except (OSError, NotImplementedError) as exc:
        log.warning("cannot lock %s (%s): collecting without a lock", path, exc)
        yield
        return
    try:
        yield
    finally:
        lock.release()


def dataset_name(key: dict[str, Any], spec: PreprocessSpec, num_frames: int, seed: int, extras: Sequence[str]) -> str:
    """The dataset folder's name: the settings that decide its frames, hashed.

    Datasets hold single frames and encoders stack them when they read, so ``frame_stack`` is left out:
    an encoder of stacked frames trains on the same folder as one of single frames.
    """
    if "frame_stack" in key:
        key = {**key, "frame_stack": 1}
    blob = json.dumps({"key": key, "spec": spec.replace(frame_stack=1).to_dict(), "extras": sorted(extras)},
                      sort_keys=True, default=str)
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
