"""From an agent config to a Stable-Baselines3 model: algorithm, action-space check, hyperparameters."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from gymnasium import spaces
from stable_baselines3 import A2C, DQN, PPO, SAC, TD3
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.noise import NormalActionNoise
from stable_baselines3.common.sb2_compat.rmsprop_tf_like import RMSpropTFLike
from stable_baselines3.common.utils import FloatSchedule, LinearSchedule
from stable_baselines3.common.vec_env import VecEnv

from vaerl.errors import ConfigError

ALGORITHMS: dict[str, type[BaseAlgorithm]] = {"ppo": PPO, "a2c": A2C, "dqn": DQN, "sac": SAC, "td3": TD3}
ACTION_SPACES: dict[str, tuple[type[spaces.Space], ...]] = {
    "ppo": (spaces.Discrete, spaces.MultiDiscrete, spaces.MultiBinary, spaces.Box),
    "a2c": (spaces.Discrete, spaces.MultiDiscrete, spaces.MultiBinary, spaces.Box),
    "dqn": (spaces.Discrete,),
    "sac": (spaces.Box,),
    "td3": (spaces.Box,),
}
# optimizers that configs may name (policy_kwargs.optimizer_class); names, never code, come from YAML
OPTIMIZERS: dict[str, type[torch.optim.Optimizer]] = {
    "Adam": torch.optim.Adam, "RMSprop": torch.optim.RMSprop, "RMSpropTFLike": RMSpropTFLike,
}
SCHEDULED = ("learning_rate", "clip_range", "clip_range_vf")


def algorithm_class(name: str) -> type[BaseAlgorithm]:
    if name not in ALGORITHMS:
        raise ConfigError(f"unknown agent.algo {name!r}: choose one of {sorted(ALGORITHMS)}")
    return ALGORITHMS[name]


def check_action_space(algo: str, action_space: spaces.Space, env_id: str) -> None:
    """Raise a :class:`ConfigError` naming the algorithms that can handle ``action_space``."""
    if isinstance(action_space, ACTION_SPACES[algo]):
        return
    fits = [name for name, allowed in ACTION_SPACES.items() if isinstance(action_space, allowed)]
    kind = "continuous (Box)" if algo in ("sac", "td3") else "discrete (Discrete)"
    raise ConfigError(f"{algo.upper()} needs a {kind} action space, but {env_id} has {action_space}: use "
                      + (" or ".join(f"agent={name}" for name in fits) if fits else "another env"))


def schedule(value: Any, horizon: float = 1.0) -> Any:
    """``"lin_2.5e-4"`` -> a linear schedule from 2.5e-4 to 0 (the RL Zoo's notation); numbers pass through.

    ``horizon`` is the length of the schedule in runs: SB3 calls a schedule with the fraction of ``learn``'s total
    left, so with ``horizon`` 10 the value falls by a tenth of its start over the run, as in the first tenth of a
    run ten times as long."""
    if isinstance(value, str) and value.startswith("lin_"):
        return LinearSchedule(float(value[4:]), 0.0, horizon)
    if isinstance(value, str):
        raise ConfigError(f"cannot read schedule {value!r}: give a number or 'lin_<initial value>'")
    return value


def model_kwargs(settings: dict[str, Any], action_space: spaces.Space, horizon: float = 1.0) -> dict[str, Any]:
    """Turn YAML settings into SB3 constructor arguments (schedules over ``horizon`` runs, optimizer names, action
    noise)."""
    kwargs = {k: v for k, v in settings.items() if k != "policy"}
    for key in SCHEDULED:
        if key in kwargs:
            kwargs[key] = schedule(kwargs[key], horizon)
    policy_kwargs = dict(kwargs.pop("policy_kwargs", None) or {})
    if "optimizer_class" in policy_kwargs:
        name = policy_kwargs["optimizer_class"]
        if name not in OPTIMIZERS:
            raise ConfigError(f"unknown optimizer_class {name!r}: choose one of {sorted(OPTIMIZERS)}")
        policy_kwargs["optimizer_class"] = OPTIMIZERS[name]
    if policy_kwargs:
        kwargs["policy_kwargs"] = policy_kwargs
    noise_std = kwargs.pop("action_noise_std", None)
    if noise_std:
        size = int(np.prod(action_space.shape))
        kwargs["action_noise"] = NormalActionNoise(np.zeros(size), noise_std * np.ones(size))
    return kwargs


def build_agent(
    algo: str,
    settings: dict[str, Any],
    env: VecEnv,
    *,
    policy: str,
    seed: int,
    device: torch.device,
    tensorboard_log: str | None,
    extra_policy_kwargs: dict[str, Any] | None = None,
    horizon: float = 1.0,
) -> BaseAlgorithm:
    """A fresh SB3 model of ``algo`` on ``env`` with ``settings`` (see ``configs/agent/*.yaml``), its schedules
    over ``horizon`` times the steps it will learn for."""
    kwargs = model_kwargs(settings, env.action_space, horizon)
    if extra_policy_kwargs:
        kwargs["policy_kwargs"] = {**kwargs.get("policy_kwargs", {}), **extra_policy_kwargs}
    try:
        return algorithm_class(algo)(policy, env, seed=seed, device=device, tensorboard_log=tensorboard_log,
                                     verbose=0, **kwargs)
    except TypeError as exc:  # an unknown hyperparameter name
        raise ConfigError(f"invalid hyperparameters for {algo.upper()}: {exc}") from exc


def set_schedules(model: BaseAlgorithm, settings: dict[str, Any], horizon: float = 1.0) -> None:
    """Give a loaded model the schedules of ``settings`` over ``horizon`` times the steps it is about to learn for
    (its total, counted from step 0): a run resumed or trained further keeps its config's schedules, not those
    pickled for the total it had when it was saved."""
    for key in SCHEDULED:
        if key not in settings or not hasattr(model, key):
            continue
        value = schedule(settings[key], horizon)
        if key == "learning_rate":
            model.learning_rate = value
            model.lr_schedule = FloatSchedule(value)
        elif value is not None:
            setattr(model, key, FloatSchedule(value))
