"""Experts to record demonstrations from: the env's scripted expert, or a trained Stable-Baselines3 agent."""

from __future__ import annotations

import zipfile
from pathlib import Path

import gymnasium as gym

from vaerl.errors import CheckpointError, ConfigError
from vaerl.rollout import PredictPolicy

SB3_ALGOS = ("PPO", "A2C", "DQN", "SAC", "TD3", "DDPG")


def load_sb3_expert(path: str | Path, algo: str, env: gym.Env, device: str = "auto") -> PredictPolicy:
    """Load a trained Stable-Baselines3 agent as an expert, checking that it fits ``env``.

    The zip's pickled attributes are read without running code (:func:`agents.safe_load.load_algorithm`).
    """
    path = Path(path)
    if algo not in SB3_ALGOS:
        raise ConfigError(f"expert_algo must be one of {SB3_ALGOS}, got {algo!r}")
    if not path.exists():
        raise ConfigError(f"no SB3 agent at {path}: give expert=scripted or the path of a saved agent (.zip)")
    import stable_baselines3

    from agents.safe_load import load_algorithm

    try:
        model = load_algorithm(getattr(stable_baselines3, algo), path, acting_only=True, device=device)
    except CheckpointError as exc:
        raise ConfigError(f"cannot load the {algo} expert: {exc}") from exc
    except (zipfile.BadZipFile, ValueError, KeyError, RuntimeError, OSError) as exc:
        raise ConfigError(f"cannot load {path} as a {algo} agent ({exc}); check expert_algo and the file") from exc
    if model.action_space != env.action_space:
        raise ConfigError(f"the agent {path} acts in {model.action_space}, the env in {env.action_space}")
    obs_shape, env_shape = tuple(model.observation_space.shape or ()), tuple(env.observation_space.shape or ())
    # SB3 stores image spaces channel-first; the env may be channel-last
    if obs_shape != env_shape and obs_shape != (env_shape[-1:] + env_shape[:-1] if env_shape else ()):
        raise ConfigError(f"the agent {path} observes {model.observation_space}, the env gives {env.observation_space}")
    return model


def scripted_expert(env: gym.Env, seed: int) -> PredictPolicy:
    """The env's own scripted expert (an env offers one through ``unwrapped.scripted_expert(seed)``)."""
    make = getattr(env.unwrapped, "scripted_expert", None)
    if make is None:
        raise ConfigError(f"{type(env.unwrapped).__name__} has no scripted expert: pass expert=<path to an SB3 agent>")
    return make(seed)


def make_expert(expert: str, env: gym.Env, seed: int, algo: str = "PPO", device: str = "auto") -> tuple[PredictPolicy, str]:
    """``expert=scripted`` or the path of a saved SB3 agent -> the policy and the name the demo file records."""
    if expert == "scripted":
        return scripted_expert(env, seed), "scripted"
    return load_sb3_expert(expert, algo, env, device), f"sb3:{algo}:{expert}"
