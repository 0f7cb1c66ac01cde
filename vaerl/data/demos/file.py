"""The demo file: demonstration episodes in one ``.npz`` archive that numpy alone reads.

A demo file is numpy's zip of ``.npy`` arrays, compressed, written atomically and read with
``allow_pickle=False``, so opening a file from elsewhere cannot run code::

    observations        (T, *obs_shape)  what the policy sees: raw env observations, or latents
                                         when an observation transform (a vaerl encoder) was applied
    final_observations  (E, *obs_shape)  the observation after each episode's last action (optional:
                                         files of vaerl 0.1 lack it; Minari datasets need it)
    actions             (T, *act_shape)  env actions (float32 for Box, int64 for Discrete)
    rewards             (T,) float32
    episode             (T,) int64       episode index of each step, 0..E-1 in order
    terminated          (E,) bool        episode ended by the env (not by truncation)
    info_<key>          (E,) float64     final-info values the env reports (is_success, mode, ...)
    metadata            ()  str          JSON: format, vaerl version, env id and config, the env's
                                         observation and action spaces, counts, expert, transform

The same episodes can be written to and read from a Minari dataset (:mod:`vaerl.data.demos.minari`).
"""

from __future__ import annotations

import json
import time
import zipfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

import vaerl
from vaerl.data.demos.spaces import space_from_description, space_mismatch
from vaerl.errors import ConfigError, DatasetError
from vaerl.io import atomic_path

FORMAT = "vaerl-demos"
FORMAT_VERSION = 1


# ---------------------------------------------------------------------------------------------- data
@dataclass
class DemoMetadata:
    env_id: str | None
    observation_space: dict[str, Any]
    """The env's (raw) observation space."""
    action_space: dict[str, Any]
    episodes: int
    steps: int
    stored_obs_shape: tuple[int, ...]
    stored_obs_dtype: str
    obs_transform: str | None = None
    """``None`` for raw observations, ``"encoder:<path>"`` for latents of a vaerl encoder."""
    encoder_digest: str | None = None
    """Content digest of that encoder's checkpoint, so a different encoder at the same path is noticed."""
    env_config: dict[str, Any] | None = None
    """The :class:`vaerl.envs.EnvConfig` that rebuilds the env, when known."""
    expert: str = ""
    seed: int | None = None
    vaerl_version: str = vaerl.__version__
    format: str = FORMAT
    format_version: int = FORMAT_VERSION
    created: float = field(default_factory=time.time)

    def __post_init__(self) -> None:
        self.stored_obs_shape = tuple(int(v) for v in self.stored_obs_shape)

    def to_json(self) -> str:
        return json.dumps(asdict(self), default=str)

    @classmethod
    def from_json(cls, text: str, path: Path) -> DemoMetadata:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise DatasetError(f"{path} has damaged metadata ({exc}); record the demonstrations again") from exc
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise DatasetError(f"{path} is an .npz file but not a vaerl demonstration file")
        if int(data.get("format_version", 0)) > FORMAT_VERSION:
            raise DatasetError(f"{path} uses demo format {data['format_version']} (vaerl {data.get('vaerl_version')}); "
                               f"this vaerl {vaerl.__version__} reads up to {FORMAT_VERSION}: upgrade vaerl")
        known = set(cls.__dataclass_fields__)
        try:
            return cls(**{k: v for k, v in data.items() if k in known})
        except TypeError as exc:
            raise DatasetError(f"{path} has incomplete metadata ({exc}); record the demonstrations again") from exc


@dataclass
class Demos:
    """A set of demonstration episodes, steps concatenated in episode order."""

    observations: np.ndarray
    actions: np.ndarray
    rewards: np.ndarray
    episode: np.ndarray
    terminated: np.ndarray
    episode_info: dict[str, np.ndarray]
    """Final-info values per episode, by info key (``is_success``, ``mode``, ...)."""
    metadata: DemoMetadata
    final_observations: np.ndarray | None = None
    """``(E, *obs_shape)``: the observation after each episode's last action, when recorded."""

    @property
    def num_episodes(self) -> int:
        return int(self.metadata.episodes)

    @property
    def num_steps(self) -> int:
        return len(self.actions)

    @property
    def episode_lengths(self) -> np.ndarray:
        return np.bincount(self.episode, minlength=self.num_episodes)

    @property
    def episode_returns(self) -> np.ndarray:
        return np.bincount(self.episode, weights=self.rewards, minlength=self.num_episodes)

    @property
    def observation_space(self) -> spaces.Space:
        """The env's observation space (raw, even when latents are stored)."""
        return space_from_description(self.metadata.observation_space)

    @property
    def action_space(self) -> spaces.Space:
        return space_from_description(self.metadata.action_space)

    def check_env(self, env: gym.Env, where: str = "the demonstrations") -> None:
        """Raise :class:`DatasetError` if ``env``'s spaces differ from the ones the demos were recorded in."""
        problems = [p for p in (space_mismatch("the observation space", self.metadata.observation_space,
                                               env.observation_space),
                                space_mismatch("the action space", self.metadata.action_space, env.action_space)) if p]
        if problems:
            recorded = self.metadata.env_id or "an unknown env"
            raise DatasetError(f"{where} were recorded in {recorded} and do not fit this env: {'; '.join(problems)}. "
                               "Record demonstrations in this env, or use the env they were recorded in")


# ---------------------------------------------------------------------------------------------- storage
def save_demos(demos: Demos, path: str | Path) -> Path:
    """Write ``demos`` to ``path`` (``.npz``) atomically: readers see the old file or the new one."""
    path = Path(path)
    if path.suffix != ".npz":
        raise ConfigError(f"demo files end in .npz, got {path}")
    validate_demos(demos, path)
    arrays = {
        "observations": demos.observations,
        "actions": demos.actions,
        "rewards": demos.rewards,
        "episode": demos.episode,
        "terminated": demos.terminated,
        "metadata": np.array(demos.metadata.to_json()),
        **{f"info_{key}": values for key, values in demos.episode_info.items()},
    }
    if demos.final_observations is not None:
        arrays["final_observations"] = demos.final_observations
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        np.savez_compressed(handle, **arrays)  # a handle: savez would append .npz to the temporary name
    return path


def load_demos(path: str | Path) -> Demos:
    """Read and validate a demo file; every problem is a :class:`DatasetError` saying what to do."""
    path = Path(path)
    if path.is_dir():
        raise DatasetError(f"{path} is a directory: pass the .npz demo file itself (scripts/collect_demos.py writes one)")
    if not path.exists():
        raise DatasetError(f"no demo file at {path}: record one with `python scripts/collect_demos.py env=<env> "
                           "expert=scripted episodes=N`")
    if path.stat().st_size == 0:
        raise DatasetError(f"{path} is empty (0 bytes): record the demonstrations again")
    try:
        with np.load(path, allow_pickle=False) as archive:
            if "metadata" not in archive.files:
                raise DatasetError(f"{path} is an .npz file but not a vaerl demonstration file (no metadata)")
            metadata = DemoMetadata.from_json(str(archive["metadata"]), path)
            missing = [k for k in ("observations", "actions", "rewards", "episode", "terminated") if k not in archive.files]
            if missing:
                raise DatasetError(f"{path} lacks the arrays {missing}; record the demonstrations again")
            demos = Demos(
                observations=archive["observations"],
                actions=archive["actions"],
                rewards=archive["rewards"],
                episode=archive["episode"],
                terminated=archive["terminated"],
                episode_info={k[len("info_"):]: archive[k] for k in archive.files if k.startswith("info_")},
                metadata=metadata,
                final_observations=archive["final_observations"] if "final_observations" in archive.files else None,
            )
    except DatasetError:
        raise
    except (zipfile.BadZipFile, EOFError, OSError, ValueError, KeyError, zipfile.LargeZipFile) as exc:
        raise DatasetError(f"{path} is truncated or corrupt ({type(exc).__name__}: {exc}); record the "
                           "demonstrations again") from exc
    validate_demos(demos, path)
    return demos


def validate_demos(demos: Demos, path: str | Path) -> None:
    """Check that arrays and metadata agree (a file cut short or edited by hand fails here)."""
    meta, steps = demos.metadata, len(demos.actions)
    if meta.episodes < 1 or steps == 0:
        raise DatasetError(f"{path} holds no transitions; record at least one episode")
    problems = []
    for name in ("observations", "rewards", "episode"):
        if len(getattr(demos, name)) != steps:
            problems.append(f"{name} has {len(getattr(demos, name))} rows, actions {steps}")
    if steps != meta.steps:
        problems.append(f"{steps} steps stored, metadata says {meta.steps}")
    if tuple(demos.observations.shape[1:]) != meta.stored_obs_shape:
        problems.append(f"observations are {demos.observations.shape[1:]}, metadata says {meta.stored_obs_shape}")
    finals = demos.final_observations
    if len(demos.terminated) != meta.episodes or any(len(v) != meta.episodes for v in demos.episode_info.values()):
        problems.append(f"per-episode arrays do not have {meta.episodes} entries")
    if finals is not None and finals.shape != (meta.episodes, *meta.stored_obs_shape):
        problems.append(f"final observations are {finals.shape}, not ({meta.episodes}, *{meta.stored_obs_shape})")
    if len(demos.episode) == steps and _bad_episode_index(demos.episode, meta.episodes):
        problems.append(f"episode indices are not 0..{meta.episodes - 1} in order")
    action_problem = _action_problem(demos.actions, space_from_description(meta.action_space))
    if action_problem:
        problems.append(action_problem)
    if problems:
        raise DatasetError(f"{path} is inconsistent: {'; '.join(problems)}. Record the demonstrations again")


def _bad_episode_index(episode: np.ndarray, episodes: int) -> bool:
    steps = np.diff(episode)
    return bool(episode[0] != 0 or episode[-1] != episodes - 1 or np.any((steps != 0) & (steps != 1)))


def _action_problem(actions: np.ndarray, space: spaces.Space) -> str | None:
    if isinstance(space, spaces.Discrete):
        if actions.ndim != 1 or not np.issubdtype(actions.dtype, np.integer):
            return f"actions are {actions.dtype} {actions.shape[1:]}, not indices of {space}"
        if actions.min() < space.start or actions.max() >= space.start + space.n:
            return f"actions lie outside {space}"
        return None
    if tuple(actions.shape[1:]) != space.shape:
        return f"actions have shape {actions.shape[1:]}, the action space {space.shape}"
    return None


