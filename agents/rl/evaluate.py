"""Evaluate a trained agent again, after training: more games, or the other policy (greedy or sampled).

``train_agent`` ends with an evaluation (``eval.json``): sampled actions on Atari, greedy elsewhere
(``EvalConfig.deterministic``). A greedy Atari policy can replay the same few games from different starts, so
its mean rests on fewer distinct games than it counts; runs made before the sampled default were evaluated
greedily. This plays either policy on the run's own held-out seeds, from the run directory alone
(``load_agent``), and writes the result beside the agent.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from agents.rl.callbacks import evaluate
from agents.rl.play import load_agent, saved_run_config
from vaerl.errors import ConfigError
from vaerl.io import write_json
from vaerl.runtime import configure_threads, seed_everything

log = logging.getLogger(__name__)


@dataclass(kw_only=True)
class EvaluateAgentConfig:
    run: str
    """The run directory of a trained agent (``agent.zip`` and ``config.json``, as ``train_agent.py`` writes)."""
    episodes: int = 30
    """Whole games to play."""
    deterministic: bool | None = None
    """``true``: the greedy action; ``false``: actions sampled from the policy, as in training; ``None``: as the
    run's own evaluations (``eval.deterministic``; runs before that setting had a default evaluated greedily)."""
    seed: int | None = None
    """First env seed; ``None``: the run's held-out evaluation seed (``seed + eval.seed_offset``)."""
    n_envs: int | None = None
    """Parallel envs (episodes are split between them); ``None``: the run's ``eval.n_envs``, so that the greedy
    evaluation with ``episodes=eval.final_episodes`` plays the games of ``eval.json`` again."""
    file: str = "agent.zip"
    """The model to load: ``agent.zip``, or ``checkpoints/last.zip`` for an unfinished run."""
    device: str = "auto"
    threads: int = 0
    """Torch CPU threads (0: what the run's observations use, as in training)."""
    out: str | None = None
    """The JSON written; ``None``: ``evaluation-greedy.json`` or ``evaluation-sampled.json`` in the run directory."""

    def __post_init__(self) -> None:
        if self.episodes < 1:
            raise ConfigError(f"episodes={self.episodes}: pass the number of games to play, 1 or more")
        if self.n_envs is not None and self.n_envs < 1:
            raise ConfigError(f"n_envs={self.n_envs}: pass 1 or more, or null for the run's eval.n_envs")

    def output_path(self, policy: str) -> Path:
        """Where the evaluation of ``policy`` (``greedy`` or ``sampled``) is written."""
        return Path(self.out) if self.out else Path(self.run) / f"evaluation-{policy}.json"


def evaluate_agent(cfg: EvaluateAgentConfig) -> dict[str, Any]:
    """Play ``cfg.episodes`` games with the run's agent and write their returns beside it (or to ``cfg.out``)."""
    run_config = saved_run_config(cfg.run, cfg.file)
    seed = run_config.seed + run_config.eval.seed_offset if cfg.seed is None else cfg.seed
    n_envs = cfg.n_envs or run_config.eval.n_envs
    deterministic = run_config.eval.is_deterministic(run_config.env) if cfg.deterministic is None else cfg.deterministic
    seed_everything(seed)
    agent = load_agent(cfg.run, device=cfg.device, n_envs=n_envs, seed=seed, file=cfg.file)
    configure_threads(cfg.threads or agent.observations.threads)
    policy = "greedy" if deterministic else "sampled"
    log.info("playing %d games of %s with the %s policy of %s", cfg.episodes, run_config.env.name, policy, cfg.run)
    try:
        result = evaluate(agent.model, agent.env, cfg.episodes, seed, deterministic)
    finally:
        agent.env.close()
    result |= {"run": str(cfg.run), "file": cfg.file, "n_envs": n_envs, "env": run_config.env.id,
               "latent": run_config.latent, "total_steps": int(agent.model.num_timesteps), "config": asdict(cfg)}
    path = write_json(cfg.output_path(policy), result)
    log.info("%s policy: return %.2f +- %.2f over %d games (%s)", policy, result["mean_return"],
             result["std_return"], result["episodes"], path)
    return result
