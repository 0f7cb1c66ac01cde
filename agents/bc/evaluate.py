"""Roll out any policy with SB3's ``predict`` and measure success rate and mode coverage.

Success and mode come from the env's final ``info``: ``is_success`` (the SB3 convention) and
``side`` (-1 / +1, which side of the obstacle the agent passed; 0 when it did not pass). Mode
coverage is the share of *successful* rollouts on each side, so a policy that crashes half the
time on one side does not look balanced.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

import gymnasium as gym
import numpy as np

from vaerl.data.demos import DemoPolicy, ObsTransform
from vaerl.errors import ConfigError

LEFT, RIGHT = -1, 1


class Rollout(NamedTuple):
    success: bool
    side: int
    length: int
    episode_return: float
    positions: np.ndarray | None  # (length + 1, 2) agent positions when the env reports them


@dataclass
class EvalResult:
    rollouts: list[Rollout]

    @property
    def episodes(self) -> int:
        return len(self.rollouts)

    @property
    def success_rate(self) -> float:
        return float(np.mean([r.success for r in self.rollouts]))

    def successes_on(self, side: int) -> int:
        return sum(r.success and r.side == side for r in self.rollouts)

    @property
    def mode_coverage(self) -> dict[str, float]:
        """Share of successful rollouts that passed on the left and on the right (0 when none succeeded)."""
        left, right = self.successes_on(LEFT), self.successes_on(RIGHT)
        total = max(1, left + right)
        return {"left": left / total, "right": right / total}

    def summary(self) -> dict[str, Any]:
        lengths = [r.length for r in self.rollouts]
        return {
            "episodes": self.episodes,
            "success_rate": self.success_rate,
            "successes_left": self.successes_on(LEFT),
            "successes_right": self.successes_on(RIGHT),
            "mode_coverage": self.mode_coverage,
            "mean_return": float(np.mean([r.episode_return for r in self.rollouts])),
            "mean_length": float(np.mean(lengths)),
        }


def evaluate_bc(
    policy: DemoPolicy,
    env: gym.Env,
    episodes: int,
    seed: int,
    *,
    deterministic: bool = True,
    obs_transform: ObsTransform | None = None,
) -> EvalResult:
    """Run ``episodes`` episodes of ``policy`` (a BC policy, an SB3 agent, a scripted expert).

    One ``seed`` seeds the env (first reset), its action space and the policy's own sampling
    (when it has a ``seed`` method), so the same seed gives the same rollouts.
    """
    if episodes < 1:
        raise ConfigError(f"evaluation needs at least one episode, got {episodes}")
    if hasattr(policy, "seed") and callable(policy.seed):
        policy.seed(seed)
    env.action_space.seed(seed)
    transform = obs_transform or (lambda obs: obs)
    rollouts = []
    for index in range(episodes):
        obs, info = env.reset(seed=seed if index == 0 else None)
        positions = [info["position"]] if "position" in info else None
        start, done, total, length = True, False, 0.0, 0
        while not done:
            action, _ = policy.predict(transform(obs), episode_start=np.array([start]), deterministic=deterministic)
            obs, reward, terminated, truncated, info = env.step(action)
            if positions is not None:
                positions.append(info["position"])
            start, done = False, bool(terminated or truncated)
            total, length = total + float(reward), length + 1
        rollouts.append(Rollout(bool(info.get("is_success", False)), int(info.get("side", 0)), length, total,
                                np.asarray(positions, np.float32) if positions is not None else None))
    return EvalResult(rollouts)
