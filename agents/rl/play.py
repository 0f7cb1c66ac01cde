"""Reload a trained agent together with its encoder, and let it play."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

import torch
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.vec_env import VecEnv

from agents.rl.builders import algorithm_class
from agents.rl.config import TrainAgentConfig
from agents.rl.envs import make_run_env, run_observations
from agents.rl.observations import Observations
from agents.safe_load import load_algorithm
from vaerl.checkpoint import CHECKPOINT_FILE
from vaerl.config import from_dict
from vaerl.encoder import Encoder
from vaerl.errors import CheckpointError
from vaerl.runtime import resolve_device


@dataclass
class LoadedAgent:
    """A trained SB3 model with the env it acts in (its encoder wrapper included)."""

    model: BaseAlgorithm
    env: VecEnv
    config: TrainAgentConfig
    observations: Observations

    @property
    def encoder(self) -> Encoder | None:
        return self.observations.encoder


def saved_run_config(run_dir: str | Path, file: str = "agent.zip") -> TrainAgentConfig:
    """The settings a trained agent's run was started with (its ``config.json``)."""
    run_dir = Path(run_dir)
    if not (run_dir / file).exists() or not (run_dir / "config.json").exists():
        raise CheckpointError(f"{run_dir} holds no trained agent ({file} and config.json): train one with "
                              "`python scripts/train_agent.py ...` first")
    return from_dict(TrainAgentConfig, json.loads((run_dir / "config.json").read_text()))


def load_agent(
    run_dir: str | Path, *, device: str | torch.device = "auto", n_envs: int = 1, seed: int | None = None,
    file: str = "agent.zip",
) -> LoadedAgent:
    """Rebuild a run's env from ``config.json`` and its own ``encoder.safetensors``, then load the model.

    Only files of the run directory are read, and none runs code: the encoder is safetensors + JSON, the agent
    zip's pickled attributes go through :func:`agents.safe_load.load_algorithm`.
    """
    run_dir = Path(run_dir)
    cfg = saved_run_config(run_dir, file)
    if cfg.latent:
        own = str(run_dir / CHECKPOINT_FILE)
        cfg = dataclasses.replace(cfg, encoder=dataclasses.replace(cfg.encoder, path=own))
    device = resolve_device(device)
    observations = run_observations(cfg, device)
    seed = cfg.seed + cfg.eval.seed_offset if seed is None else seed
    env = make_run_env(cfg, observations, n_envs=n_envs, seed=seed, training=False)
    model = load_algorithm(algorithm_class(cfg.agent.algo), run_dir / file, acting_only=True, env=env, device=device)
    # SB3's load seeds torch, numpy, the action space and the env with the seed the agent trained with; the seed asked
    # for here must decide the games (held-out evaluation seeds, each pretraining seed's frames of the agent's play)
    model.set_random_seed(seed)
    return LoadedAgent(model, env, cfg, observations)


def play(agent: LoadedAgent, episodes: int = 1, *, deterministic: bool = True, max_steps: int = 100_000) -> list[float]:
    """Whole-game returns (unclipped) of ``episodes`` games played by ``agent`` (env 0 only)."""
    returns: list[float] = []
    obs = agent.env.reset()
    for _ in range(max_steps):
        action, _ = agent.model.predict(obs, deterministic=deterministic)
        obs, _, dones, infos = agent.env.step(action)
        if dones[0] and "episode" in infos[0]:
            returns.append(float(infos[0]["episode"]["r"]))
            if len(returns) == episodes:
                break
    return returns
