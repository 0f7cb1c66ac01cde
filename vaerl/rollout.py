"""The episode rollout loop: run any policy with Stable-Baselines3's ``predict`` in a gymnasium env.

Recording demonstrations and evaluating behaviour-cloning policies both run episodes this way, so
seeding, action conversion and what counts as the episode's end are the same for both.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from vaerl.errors import ConfigError

ObsTransform = Callable[[np.ndarray], np.ndarray]
"""Maps one raw observation to the one that is stored and fed to the policy (e.g. a latent)."""


class PredictPolicy(Protocol):
    """Anything with Stable-Baselines3's ``predict``: SB3 agents, vaerl BC policies, scripted experts."""

    def predict(
        self, observation: Any, state: Any = None, episode_start: np.ndarray | None = None, deterministic: bool = False
    ) -> tuple[Any, Any]: ...


class CallbackPolicy:
    """Wrap ``act(observation) -> action`` (a person at a keyboard, a controller) as a :class:`PredictPolicy`.

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


@dataclass
class Episode:
    """One episode as the policy lived it."""

    observations: list[np.ndarray] = field(default_factory=list)
    """``keep(obs)`` of the observation before each action; empty without ``keep``."""
    final_observation: np.ndarray | None = None
    """``keep(obs)`` of the observation after the last action; ``None`` without ``keep``."""
    actions: list[Any] = field(default_factory=list)
    rewards: list[float] = field(default_factory=list)
    infos: list[dict[str, Any]] = field(default_factory=list)
    """The reset info, then one info per step: ``infos[-1]`` is the episode's final info."""
    terminated: bool = False

    @property
    def length(self) -> int:
        return len(self.actions)

    @property
    def final_info(self) -> dict[str, Any]:
        return self.infos[-1]

    @property
    def episode_return(self) -> float:
        return float(sum(self.rewards))


def run_episodes(
    env: gym.Env,
    policy: PredictPolicy,
    episodes: int,
    seed: int,
    *,
    deterministic: bool = True,
    obs_transform: ObsTransform | None = None,
    keep: ObsTransform | None = None,
) -> Iterator[Episode]:
    """Run ``policy`` for ``episodes`` episodes in ``env``, yielding each when it ends.

    The env is reset with ``seed`` once (later resets continue its generator) and its action space
    is seeded with it; a policy with its own randomness is seeded by the caller. The policy sees
    ``obs_transform(obs)`` (the raw observation without one) and SB3's ``episode_start`` flag;
    ``keep(obs)`` of every observation, the last one included, is kept in the episode (recording
    keeps latents of an encoder while the expert acts on raw observations).
    """
    if episodes < 1:
        raise ConfigError(f"episodes must be >= 1, got {episodes}")
    env.action_space.seed(seed)
    transform = obs_transform or _identity
    for index in range(episodes):
        obs, info = env.reset(seed=seed if index == 0 else None)
        episode = Episode(infos=[info])
        start, done = True, False
        while not done:
            action, _ = policy.predict(transform(obs), episode_start=np.array([start]), deterministic=deterministic)
            action = as_env_action(action, env.action_space)
            if keep is not None:
                episode.observations.append(np.asarray(keep(obs)))
            obs, reward, terminated, truncated, info = env.step(action)
            episode.actions.append(action)
            episode.rewards.append(float(reward))
            episode.infos.append(info)
            start, done = False, bool(terminated or truncated)
        episode.terminated = bool(terminated)
        if keep is not None:
            episode.final_observation = np.asarray(keep(obs))
        yield episode


def _identity(obs: np.ndarray) -> np.ndarray:
    return obs


def seed_policy(policy: PredictPolicy, seed: int) -> None:
    """Seed a policy's own sampling when it has a ``seed`` method (vaerl BC policies do; experts seed themselves)."""
    seed_method = getattr(policy, "seed", None)
    if callable(seed_method):
        seed_method(seed)


def as_env_action(action: Any, space: spaces.Space) -> Any:
    """Unbatch an action (SB3 ``predict`` on one observation may return shape ``(1, ...)``)."""
    if isinstance(space, spaces.Discrete):
        return int(np.asarray(action).reshape(-1)[0])
    return np.asarray(action, dtype=space.dtype).reshape(space.shape)
