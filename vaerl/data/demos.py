"""Demonstrations for imitation: record (observation, action, reward, episode) from any policy, store them safely.

A demo file is one ``.npz`` archive (numpy's zip of ``.npy`` arrays, compressed), written atomically
and read with ``allow_pickle=False``, so opening a file from elsewhere cannot run code::

    observations      (T, *obs_shape)  what the policy sees: raw env observations, or latents
                                       when an ``obs_transform`` (a vaerl encoder) was applied
    actions           (T, *act_shape)  env actions (float32 for Box, int64 for Discrete)
    rewards           (T,) float32
    episode           (T,) int64       episode index of each step, 0..E-1 in order
    terminated        (E,) bool        episode ended by the env (not by truncation)
    info_<key>        (E,) float64     final-info values such as is_success or side
    metadata          ()  str          JSON: format, vaerl version, env id and config, the env's
                                       observation and action spaces, counts, expert, transform

Why not Minari: it installs (``pip install minari``: pydantic, typer, and h5py or pyarrow for
storage) but keeps datasets under a global root keyed by dataset id rather than at a path, has
no atomic write, and would still need callbacks for stored latents and final-info labels. This
format is a single portable file that ``numpy`` alone reads.
"""

from __future__ import annotations

import json
import logging
import time
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import gymnasium as gym
import numpy as np
from gymnasium import spaces

import vaerl
from vaerl.envs import EnvConfig, make_env
from vaerl.errors import ConfigError, DatasetError
from vaerl.io import atomic_path

log = logging.getLogger(__name__)

FORMAT = "vaerl-demos"
FORMAT_VERSION = 1
EPISODE_INFO_KEYS = ("is_success", "side")
ENCODER_PREFIX = "encoder:"
SB3_ALGOS = ("PPO", "A2C", "DQN", "SAC", "TD3", "DDPG")

ObsTransform = Callable[[np.ndarray], np.ndarray]
"""Maps one raw observation to the one that is stored and fed to the policy (e.g. a latent)."""


class DemoPolicy(Protocol):
    """Anything with Stable-Baselines3's ``predict``: SB3 agents, vaerl BC policies, scripted experts."""

    def predict(
        self, observation: Any, state: Any = None, episode_start: np.ndarray | None = None, deterministic: bool = False
    ) -> tuple[Any, Any]: ...


class CallbackPolicy:
    """Wrap ``act(observation) -> action`` (a person at a keyboard, a controller) as a :class:`DemoPolicy`.

    ``on_episode_start`` is called before the first action of every episode.
    """

    def __init__(self, act: Callable[[Any], Any], on_episode_start: Callable[[], None] | None = None) -> None:
        self.act, self.on_episode_start = act, on_episode_start

    def predict(
        self, observation: Any, state: Any = None, episode_start: np.ndarray | None = None, deterministic: bool = False
    ) -> tuple[Any, Any]:
        if self.on_episode_start is not None and episode_start is not None and np.asarray(episode_start).any():
            self.on_episode_start()
        return self.act(observation), state


# ---------------------------------------------------------------------------------------------- spaces
def describe_space(space: spaces.Space) -> dict[str, Any]:
    """JSON description of a ``Box`` or ``Discrete`` space (bounds kept as scalars when uniform)."""
    if isinstance(space, spaces.Discrete):
        return {"type": "Discrete", "n": int(space.n), "start": int(space.start)}
    if isinstance(space, spaces.Box):
        def bound(values: np.ndarray) -> Any:
            flat = np.asarray(values, dtype=np.float64)
            return float(flat.flat[0]) if flat.size and np.all(flat == flat.flat[0]) else flat.tolist()

        return {"type": "Box", "shape": list(space.shape), "dtype": str(space.dtype),
                "low": bound(space.low), "high": bound(space.high)}
    raise DatasetError(f"only Box and Discrete spaces are supported for demonstrations, got {space}")


def space_from_description(data: dict[str, Any]) -> spaces.Space:
    """Inverse of :func:`describe_space`."""
    if data.get("type") == "Discrete":
        return spaces.Discrete(int(data["n"]), start=int(data.get("start", 0)))
    if data.get("type") == "Box":
        shape = tuple(int(v) for v in data["shape"])
        dtype = np.dtype(data["dtype"])
        low = np.broadcast_to(np.asarray(data["low"], dtype=np.float64), shape).astype(dtype)
        high = np.broadcast_to(np.asarray(data["high"], dtype=np.float64), shape).astype(dtype)
        return spaces.Box(low, high, shape, dtype)
    raise DatasetError(f"unknown space description {data!r}")


def space_mismatch(name: str, expected: dict[str, Any], space: spaces.Space) -> str | None:
    """A sentence saying how ``space`` differs from the described one, or ``None`` when they match."""
    try:
        found = describe_space(space)
    except DatasetError as exc:
        return f"{name}: {exc}"
    if space_from_description(expected) == space and expected["type"] == found["type"]:
        return None
    return f"{name} is {_short(found)} here but {_short(expected)} in the file"


def _short(desc: dict[str, Any]) -> str:
    if desc["type"] == "Discrete":
        return f"Discrete({desc['n']})"
    return f"Box(shape={tuple(desc['shape'])}, dtype={desc['dtype']}, low={desc['low']}, high={desc['high']})"


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
    """Final-info values per episode, by info key (``is_success``, ``side``, ...)."""
    metadata: DemoMetadata

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


# ---------------------------------------------------------------------------------------------- recording
def record_demos(
    env: gym.Env,
    policy: DemoPolicy,
    episodes: int,
    seed: int,
    *,
    deterministic: bool = True,
    obs_transform: ObsTransform | None = None,
    transform_name: str | None = None,
    expert: str = "",
    env_config: dict[str, Any] | None = None,
    episode_info_keys: Sequence[str] = EPISODE_INFO_KEYS,
) -> Demos:
    """Run ``policy`` for ``episodes`` episodes in ``env`` and return what it did.

    The env is reset with ``seed`` once (later resets continue its generator) and its action space
    is seeded with it, so a seeded policy gives the same demonstrations every time. With an
    ``obs_transform`` the transformed observations are stored (see :func:`encoder_obs_transform`)
    and ``transform_name`` records which transform it was.
    """
    if episodes < 1:
        raise ConfigError(f"episodes must be >= 1, got {episodes}")
    if obs_transform is not None and not transform_name:
        raise ConfigError("give transform_name with obs_transform, so the file says what its observations are")
    describe_space(env.action_space), describe_space(env.observation_space)  # fail early on Dict/Tuple spaces
    env.action_space.seed(seed)
    transform = obs_transform or (lambda obs: np.asarray(obs))
    observations, actions, rewards, episode_ids, terminated = [], [], [], [], []
    finals: list[dict[str, Any]] = []
    for index in range(episodes):
        obs, info = env.reset(seed=seed if index == 0 else None)
        start, done = True, False
        while not done:
            action, _ = policy.predict(obs, episode_start=np.array([start]), deterministic=deterministic)
            action = _as_env_action(action, env.action_space)
            observations.append(np.asarray(transform(obs)))
            next_obs, reward, term, trunc, info = env.step(action)
            actions.append(action)
            rewards.append(float(reward))
            episode_ids.append(index)
            obs, start, done = next_obs, False, bool(term or trunc)
        terminated.append(bool(term))
        finals.append(info)
    episode_info = {key: np.array([float(f[key]) for f in finals]) for key in episode_info_keys
                    if all(key in f for f in finals)}
    obs_array = np.stack(observations)
    metadata = DemoMetadata(
        env_id=env.spec.id if env.spec is not None else None,
        observation_space=describe_space(env.observation_space),
        action_space=describe_space(env.action_space),
        episodes=episodes,
        steps=len(actions),
        stored_obs_shape=obs_array.shape[1:],
        stored_obs_dtype=str(obs_array.dtype),
        obs_transform=transform_name if obs_transform is not None else None,
        env_config=env_config if env_config is not None else _env_config_of(env),
        expert=expert,
        seed=seed,
    )
    action_dtype = np.int64 if isinstance(env.action_space, spaces.Discrete) else np.float32
    return Demos(obs_array, np.asarray(actions, dtype=action_dtype), np.asarray(rewards, np.float32),
                 np.asarray(episode_ids, np.int64), np.asarray(terminated, bool), episode_info, metadata)


def _env_config_of(env: gym.Env) -> dict[str, Any] | None:
    """An :class:`EnvConfig` that rebuilds a ``gym.make``'d env with the same keyword arguments."""
    if env.spec is None:
        return None
    kwargs = {k: v for k, v in env.spec.kwargs.items() if k != "render_mode"}
    return EnvConfig(name=env.spec.id, id=env.spec.id, kind="gym", kwargs=kwargs,
                     max_episode_steps=env.spec.max_episode_steps).to_dict()


def _as_env_action(action: Any, space: spaces.Space) -> Any:
    """Unbatch an action (SB3 ``predict`` on one observation may return shape ``(1, ...)``)."""
    if isinstance(space, spaces.Discrete):
        return int(np.asarray(action).reshape(-1)[0])
    return np.asarray(action, dtype=space.dtype).reshape(space.shape)


def encoder_obs_transform(encoder: Any) -> ObsTransform:
    """Turn a vaerl :class:`~vaerl.encoder.Encoder` into an :data:`ObsTransform` (raw obs -> float32 latent)."""
    def transform(obs: np.ndarray) -> np.ndarray:
        return encoder.encode(np.asarray(obs)[None])[0].detach().cpu().numpy().astype(np.float32)

    return transform


def obs_transform_from_name(name: str | None, device: str = "auto") -> ObsTransform | None:
    """Rebuild the transform a demo file (or a policy checkpoint) names: ``None`` or ``encoder:<path>``."""
    if name is None:
        return None
    if not name.startswith(ENCODER_PREFIX):
        raise DatasetError(f"unknown observation transform {name!r}: vaerl only knows '{ENCODER_PREFIX}<path>'")
    from vaerl.encoder import load_encoder

    return encoder_obs_transform(load_encoder(name[len(ENCODER_PREFIX):], device=device))


# ---------------------------------------------------------------------------------------------- storage
def save_demos(demos: Demos, path: str | Path) -> Path:
    """Write ``demos`` to ``path`` (``.npz``) atomically: readers see the old file or the new one."""
    path = Path(path)
    if path.suffix != ".npz":
        raise ConfigError(f"demo files end in .npz, got {path}")
    _validate(demos, path)
    arrays = {
        "observations": demos.observations,
        "actions": demos.actions,
        "rewards": demos.rewards,
        "episode": demos.episode,
        "terminated": demos.terminated,
        "metadata": np.array(demos.metadata.to_json()),
        **{f"info_{key}": values for key, values in demos.episode_info.items()},
    }
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
            )
    except DatasetError:
        raise
    except (zipfile.BadZipFile, EOFError, OSError, ValueError, KeyError, zipfile.LargeZipFile) as exc:
        raise DatasetError(f"{path} is truncated or corrupt ({type(exc).__name__}: {exc}); record the "
                           "demonstrations again") from exc
    _validate(demos, path)
    return demos


def _validate(demos: Demos, path: Path) -> None:
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
    if len(demos.terminated) != meta.episodes or any(len(v) != meta.episodes for v in demos.episode_info.values()):
        problems.append(f"per-episode arrays do not have {meta.episodes} entries")
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


# ---------------------------------------------------------------------------------------------- experts
def load_sb3_expert(path: str | Path, algo: str, env: gym.Env, device: str = "auto") -> DemoPolicy:
    """Load a trained Stable-Baselines3 agent as an expert, checking that it fits ``env``.

    SB3 zips are partly pickled: load only agents you trust.
    """
    path = Path(path)
    if algo not in SB3_ALGOS:
        raise ConfigError(f"expert_algo must be one of {SB3_ALGOS}, got {algo!r}")
    if not path.exists():
        raise ConfigError(f"no SB3 agent at {path}: give expert=scripted or the path of a saved agent (.zip)")
    import stable_baselines3

    try:
        model = getattr(stable_baselines3, algo).load(str(path), device=device)
    except (zipfile.BadZipFile, ValueError, KeyError, RuntimeError, OSError) as exc:
        raise ConfigError(f"cannot load {path} as a {algo} agent ({exc}); check expert_algo and the file") from exc
    if model.action_space != env.action_space:
        raise ConfigError(f"the agent {path} acts in {model.action_space}, the env in {env.action_space}")
    obs_shape, env_shape = tuple(model.observation_space.shape or ()), tuple(env.observation_space.shape or ())
    # SB3 stores image spaces channel-first; the env may be channel-last
    if obs_shape != env_shape and obs_shape != (env_shape[-1:] + env_shape[:-1] if env_shape else ()):
        raise ConfigError(f"the agent {path} observes {model.observation_space}, the env gives {env.observation_space}")
    return model


def scripted_expert(env: gym.Env, seed: int) -> DemoPolicy:
    """The env's own scripted expert (an env offers one through ``unwrapped.scripted_expert(seed)``)."""
    make = getattr(env.unwrapped, "scripted_expert", None)
    if make is None:
        raise ConfigError(f"{type(env.unwrapped).__name__} has no scripted expert: pass expert=<path to an SB3 agent>")
    return make(seed)


# ---------------------------------------------------------------------------------------------- entry point
@dataclass
class CollectDemosConfig:
    """``scripts/collect_demos.py``: record demonstrations of an expert into one demo file."""

    env: EnvConfig = field(default_factory=EnvConfig)
    """Which env to record in (``kind: gym`` for vaerl/Obstacle-v0 and other non-Atari envs)."""
    expert: str = "scripted"
    """``scripted`` (the env's own expert) or the path of a saved Stable-Baselines3 agent."""
    expert_algo: str = "PPO"
    """SB3 algorithm of a saved agent."""
    deterministic: bool = True
    """Let an SB3 expert act deterministically."""
    episodes: int = 100
    seed: int = 0
    out: str = "demos.npz"
    overwrite: bool = False
    encoder: str | None = None
    """Path of a vaerl encoder: store its latents instead of raw observations."""
    device: str = "auto"


def collect_demos(config: CollectDemosConfig) -> Path:
    """Record ``config.episodes`` expert episodes and write them to ``config.out``; returns the path."""
    env_config = config.env
    out = Path(config.out)
    if out.suffix != ".npz":
        raise ConfigError(f"out must end in .npz, got {out}")
    if out.exists() and not config.overwrite:
        raise ConfigError(f"{out} exists; pass overwrite=true to replace it or choose another out=")
    env = make_env(env_config, seed=config.seed)
    try:
        if config.expert == "scripted":
            policy, expert_name = scripted_expert(env, config.seed), "scripted"
        else:
            policy = load_sb3_expert(config.expert, config.expert_algo, env, config.device)
            expert_name = f"sb3:{config.expert_algo}:{config.expert}"
        transform_name = f"{ENCODER_PREFIX}{config.encoder}" if config.encoder else None
        transform = obs_transform_from_name(transform_name, config.device)
        demos = record_demos(env, policy, config.episodes, config.seed, deterministic=config.deterministic,
                             obs_transform=transform, transform_name=transform_name, expert=expert_name,
                             env_config=env_config.to_dict())
    finally:
        env.close()
    save_demos(demos, out)
    success = demos.episode_info.get("is_success")
    log.info("recorded %d episodes (%d steps)%s -> %s", demos.num_episodes, demos.num_steps,
             f", success rate {success.mean():.2f}" if success is not None else "", out)
    return out
