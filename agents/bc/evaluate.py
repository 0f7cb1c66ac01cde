"""Roll out any policy with SB3's ``predict`` and measure success rate and mode coverage.

Success and mode come from the env's final ``info``: ``is_success`` (the SB3 convention) and
``mode`` (the index of the way the episode went, -1 for none; vaerl's obstacle envs report the
passage the agent crossed in). The env names its modes in ``unwrapped.mode_names``. Mode shares
count *successful* rollouts only, so a policy that crashes half the time one way does not look
balanced; mode coverage is the entropy of those shares over ``log K`` (1: all ``K`` modes equally
often, 0: one mode only).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, NamedTuple

import gymnasium as gym
import numpy as np

from vaerl.errors import ConfigError
from vaerl.rollout import ObsTransform, PredictPolicy, run_episodes, seed_policy


class Rollout(NamedTuple):
    success: bool
    mode: int
    length: int
    episode_return: float
    positions: np.ndarray | None  # (length + 1, 2) agent positions when the env reports them


@dataclass
class EvalResult:
    rollouts: list[Rollout]
    mode_names: tuple[str, ...] = ()
    """Names of the env's modes, by index (empty when the env names none)."""

    @property
    def episodes(self) -> int:
        return len(self.rollouts)

    @property
    def success_rate(self) -> float:
        return float(np.mean([r.success for r in self.rollouts]))

    def mode_counts(self) -> np.ndarray:
        """Successful rollouts per mode, ``(K,)``."""
        modes = [r.mode for r in self.rollouts if r.success and 0 <= r.mode < len(self.mode_names)]
        return np.bincount(np.asarray(modes, dtype=np.int64), minlength=len(self.mode_names))

    @property
    def mode_shares(self) -> dict[str, float]:
        """Share of successful rollouts that went each way (all 0 when none succeeded)."""
        counts = self.mode_counts()
        return {name: float(c) / max(1, int(counts.sum())) for name, c in zip(self.mode_names, counts)}

    @property
    def mode_coverage(self) -> float | None:
        """Entropy of the mode shares over ``log K`` (``None`` for envs with fewer than two named modes)."""
        if len(self.mode_names) < 2:
            return None
        shares = np.array(list(self.mode_shares.values()))
        entropy = -sum(p * math.log(p) for p in shares if p > 0)
        return float(entropy / math.log(len(shares)))

    def summary(self) -> dict[str, Any]:
        lengths = [r.length for r in self.rollouts]
        return {
            "episodes": self.episodes,
            "success_rate": self.success_rate,
            "successes_by_mode": dict(zip(self.mode_names, self.mode_counts().tolist())),
            "mode_shares": self.mode_shares,
            "mode_coverage": self.mode_coverage,
            "mean_return": float(np.mean([r.episode_return for r in self.rollouts])),
            "mean_length": float(np.mean(lengths)),
        }

    def describe(self) -> str:
        """``success 97%, left/right 48%/52%`` (one line for logs and picture titles)."""
        text = f"success {self.success_rate:.0%}"
        if self.mode_names:
            shares = self.mode_shares
            text += f", {'/'.join(shares)} {'/'.join(f'{v:.0%}' for v in shares.values())}"
        return text


def evaluate_bc(
    policy: PredictPolicy,
    env: gym.Env,
    episodes: int,
    seed: int,
    *,
    deterministic: bool = True,
    obs_transform: ObsTransform | None = None,
) -> EvalResult:
    """Run ``episodes`` episodes of ``policy`` (a BC policy, an SB3 agent, a scripted expert).

    One ``seed`` seeds the env (first reset), its action space and the policy's own sampling
    (when it has a ``seed`` method), so the same seed gives the same rollouts. A policy trained on
    encoder latents runs in ``vaerl.wrap(env, encoder)`` (or with ``obs_transform``).
    """
    if episodes < 1:
        raise ConfigError(f"evaluation needs at least one episode, got {episodes}")
    seed_policy(policy, seed)
    rollouts = []
    for episode in run_episodes(env, policy, episodes, seed, deterministic=deterministic, obs_transform=obs_transform):
        info = episode.final_info
        positions = [i["position"] for i in episode.infos] if "position" in episode.infos[0] else None
        rollouts.append(Rollout(bool(info.get("is_success", False)), int(info.get("mode", -1)), episode.length,
                                episode.episode_return, np.asarray(positions, np.float32) if positions else None))
    return EvalResult(rollouts, tuple(getattr(env.unwrapped, "mode_names", ())))
