"""Demonstrations as Minari datasets, the offline-RL dataset format of the gymnasium ecosystem.

``save_minari`` writes :class:`~vaerl.data.demos.file.Demos` under Minari's datasets root
(``MINARI_DATASETS_PATH``, else ``~/.minari/datasets``), where ``minari.load_dataset(<id>)`` and
``minari list local`` find it. It writes into a ``<id>.partial-<host>-<pid>-*`` folder beside the
dataset and publishes it by one rename, so an interrupted run leaves no half-written dataset
(leftovers of dead writers are removed by the next one). Per episode, Minari stores the
observations including the one after the last action; vaerl's final-info values (``is_success``,
``mode``, ...) are episode metadata, and the demo file's metadata (env config, encoder of stored
latents) is kept under the dataset metadata key ``vaerl``.

``load_minari`` reads a locally installed dataset, vaerl's or anyone's with ``Box`` or
``Discrete`` spaces, back into ``Demos``.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import socket
import uuid
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from vaerl.data.dataset import remove_stale_partials
from vaerl.data.demos.file import DemoMetadata, Demos, load_demos, validate_demos
from vaerl.data.demos.spaces import describe_space
from vaerl.errors import ConfigError, DatasetError

PREFIX = "minari:"
VAERL_KEY = "vaerl"
MINARI_EPISODE_KEYS = ("id", "total_steps", "seed", "options")
"""Episode metadata Minari writes itself (the rest are the episodes' final-info values)."""
_INSTALL = 'Minari is not installed: pip install "minari[hdf5]" (or pip install "vaerl[minari]")'


def _minari() -> Any:
    try:
        import minari
    except ImportError as exc:
        raise ConfigError(_INSTALL) from exc
    return minari


def dataset_path(dataset_id: str) -> Path:
    """Where Minari keeps the dataset ``dataset_id`` on this machine."""
    from minari.storage.datasets_root_dir import get_dataset_path

    _minari()
    return Path(get_dataset_path(dataset_id))


def save_minari(demos: Demos, dataset_id: str, *, overwrite: bool = False) -> Path:
    """Write ``demos`` as the local Minari dataset ``dataset_id``; returns its folder."""
    minari = _minari()
    from minari.data_collector import EpisodeBuffer
    from minari.dataset.minari_dataset import parse_dataset_id
    from minari.dataset.minari_storage import MinariStorage

    try:
        namespace = parse_dataset_id(dataset_id)[0]
    except (ValueError, AttributeError) as exc:
        raise ConfigError(f"{dataset_id!r} is not a Minari dataset id ((namespace/)name-v<version>): {exc}") from exc
    if demos.final_observations is None:
        raise DatasetError("these demonstrations lack the observation after each episode's end, which Minari "
                           "stores: record them again with this vaerl")
    validate_demos(demos, f"the demonstrations for {dataset_id}")
    target = dataset_path(dataset_id)
    if target.exists() and not overwrite:
        raise ConfigError(f"a Minari dataset {dataset_id} already exists at {target}; pass overwrite=true to "
                          "replace it or choose another dataset_id")
    remove_stale_partials(target)
    partial = target.with_name(f"{target.name}.partial-{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    partial.mkdir(parents=True)
    try:
        storage = MinariStorage.new(partial / "data", observation_space=stored_observation_space(demos),
                                    action_space=demos.action_space, env_spec=_env_spec(demos.metadata),
                                    data_format="hdf5", jpeg_encoding=False)
        starts = np.flatnonzero(np.r_[True, np.diff(demos.episode) != 0])
        ends = np.r_[starts[1:], demos.num_steps]
        buffers = []
        for index, (start, end) in enumerate(zip(starts, ends)):
            length, terminated = int(end - start), bool(demos.terminated[index])
            buffers.append(EpisodeBuffer(
                id=index,
                seed=demos.metadata.seed if index == 0 else None,
                observations=np.concatenate([demos.observations[start:end], demos.final_observations[index, None]]),
                actions=demos.actions[start:end],
                rewards=demos.rewards[start:end].astype(np.float64),
                terminations=np.r_[np.zeros(length - 1, bool), terminated],
                truncations=np.r_[np.zeros(length - 1, bool), not terminated],
                infos={},
            ))
        storage.update_episodes(buffers)
        storage.update_episode_metadata([{key: float(values[i]) for key, values in demos.episode_info.items()}
                                         for i in range(demos.num_episodes)])
        storage.update_metadata({"dataset_id": dataset_id, "minari_version": minari.__version__,
                                 "algorithm_name": demos.metadata.expert or "unknown",
                                 "description": "demonstrations recorded with vaerl", VAERL_KEY: demos.metadata.to_json()})
        if namespace is not None:
            from minari.namespace import create_namespace, list_local_namespaces

            if namespace not in list_local_namespaces():
                create_namespace(namespace)
        _publish(partial, target)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    return target


def stored_observation_space(demos: Demos) -> spaces.Space:
    """The space of the stored observations: the env's own, or an unbounded ``Box`` of latents."""
    meta = demos.metadata
    if meta.obs_transform is None:
        return demos.observation_space
    return spaces.Box(-np.inf, np.inf, meta.stored_obs_shape, np.dtype(meta.stored_obs_dtype))


def load_minari(dataset_id: str) -> Demos:
    """Read the locally installed Minari dataset ``dataset_id`` as demonstrations (nothing is downloaded)."""
    minari = _minari()
    source = f"the Minari dataset {dataset_id}"
    try:
        dataset = minari.load_dataset(dataset_id)
    except FileNotFoundError as exc:
        raise DatasetError(f"no Minari dataset {dataset_id} is installed under {dataset_path('')}: record one with "
                           f"`python scripts/collect_demos.py format=minari dataset_id={dataset_id} ...`, or install "
                           "it with `minari download` on a machine online") from exc
    except (ValueError, KeyError, OSError) as exc:
        raise DatasetError(f"{source} cannot be read ({type(exc).__name__}: {exc})") from exc
    if dataset.total_episodes == 0 or dataset.total_steps == 0:
        raise DatasetError(f"{source} holds no transitions; record at least one episode")
    episodes = list(dataset.iterate_episodes())
    for episode in episodes:
        if not isinstance(episode.observations, np.ndarray) or not isinstance(episode.actions, np.ndarray):
            raise DatasetError(f"{source} has {dataset.observation_space} observations and {dataset.action_space} "
                               "actions: vaerl reads Box and Discrete spaces only")
    raw = dataset.storage.metadata
    metadata = (DemoMetadata.from_json(raw[VAERL_KEY], Path(source)) if VAERL_KEY in raw
                else _foreign_metadata(dataset, episodes))
    per_episode = list(dataset.storage.get_episode_metadata(range(dataset.total_episodes)))
    keys = [k for k in (per_episode[0] if per_episode else {})
            if k not in MINARI_EPISODE_KEYS and all(np.isscalar(m.get(k)) for m in per_episode)]
    demos = Demos(
        observations=np.concatenate([e.observations[:-1] for e in episodes]),
        actions=np.concatenate([e.actions for e in episodes]).astype(_action_dtype(dataset.action_space)),
        rewards=np.concatenate([e.rewards for e in episodes]).astype(np.float32),
        episode=np.repeat(np.arange(len(episodes), dtype=np.int64), [len(e.actions) for e in episodes]),
        terminated=np.array([bool(e.terminations[-1]) for e in episodes]),
        episode_info={k: np.array([float(m[k]) for m in per_episode]) for k in keys},
        metadata=metadata,
        final_observations=np.stack([e.observations[-1] for e in episodes]),
    )
    validate_demos(demos, source)
    return demos


def _foreign_metadata(dataset: Any, episodes: list[Any]) -> DemoMetadata:
    """Metadata for a dataset another tool wrote: raw observations of the env in its spec."""
    env_spec = dataset.spec.env_spec
    obs = episodes[0].observations
    return DemoMetadata(
        env_id=env_spec.id if env_spec is not None else None,
        observation_space=describe_space(dataset.observation_space),
        action_space=describe_space(dataset.action_space),
        episodes=len(episodes),
        steps=sum(len(e.actions) for e in episodes),
        stored_obs_shape=obs.shape[1:],
        stored_obs_dtype=str(obs.dtype),
        env_config=None,
        expert=str(dataset.storage.metadata.get("algorithm_name", "")),
    )


def _action_dtype(space: spaces.Space) -> type:
    return np.int64 if isinstance(space, spaces.Discrete) else np.float32


def _env_spec(meta: DemoMetadata) -> gym.envs.registration.EnvSpec | None:
    """The recorded env's spec with its keyword arguments, so ``recover_environment`` rebuilds it."""
    if meta.env_id is None or meta.env_id not in gym.registry:
        return None
    kwargs = dict((meta.env_config or {}).get("kwargs") or {})
    return dataclasses.replace(gym.spec(meta.env_id), kwargs={**gym.spec(meta.env_id).kwargs, **kwargs})


def _publish(partial: Path, target: Path) -> None:
    """Move ``partial`` onto ``target`` by rename; a replaced dataset is removed only once the new one is in place."""
    old = None
    if target.exists():
        old = target.with_name(f"{target.name}.replaced-{uuid.uuid4().hex[:8]}")
        target.rename(old)
    partial.rename(target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def load_demo_source(source: str | Path) -> Demos:
    """Demonstrations from a ``.npz`` demo file or, for ``minari:<dataset id>``, a local Minari dataset."""
    text = str(source)
    if text.startswith(PREFIX):
        return load_minari(text[len(PREFIX):])
    return load_demos(text)
