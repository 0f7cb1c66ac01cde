"""Pretraining frames from a trained agent's play: ``scripts/pretrain_vae.py data.policy=<agent run directory>``.

Random play never reaches the states a learning agent needs described well: Breakout with its lower bricks
gone and a fast ball, Pong rallies. An agent that has learned a little does. It plays in its own env, with
its own encoder and observation pipeline as :func:`~agents.rl.play.load_agent` rebuilds them, and samples
its actions from its policy, so the frames keep some variety. Each step's preprocessed frame is stored with
the action taken from it and the reward that followed, as random play stores them; a lost life ends an
episode (the agent's envs end one there), so frame stacks and the validation split never cross one. Eight
games run at once, as in the agent's training.

One round of agent -> frames -> pretraining -> agent is in BENCHMARKS.md.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from agents.rl.play import LoadedAgent, load_agent
from vaerl.data.collect import PolicyFrames
from vaerl.data.dataset import FrameDataset, FrameDatasetWriter
from vaerl.data.vector_collect import VECTOR_EXTRAS, EpisodeBuffers, episode_extra_specs
from vaerl.errors import ConfigError, DatasetError
from vaerl.evaluation.runs import file_digest
from vaerl.preprocessing import PreprocessSpec
from vaerl.progress import progress_bar
from vaerl.training.config import PretrainConfig

log = logging.getLogger(__name__)

AGENT_FILE = "agent.zip"
AGENT_ENVS = 8
"""Games the agent plays at once: one batched encoder and policy forward per step for all of them."""


def agent_frames(cfg: PretrainConfig) -> PolicyFrames:
    """The frames ``cfg.data.policy`` (a ``scripts/train_agent.py`` run directory) plays, for
    :func:`vaerl.training.pretrain`; the digests of its agent and run config join the dataset key, so a
    retrained agent collects anew."""
    if not cfg.data.policy:
        raise ConfigError("data.policy is not set: pass the run directory of a trained agent")
    run_dir = Path(cfg.data.policy)
    agent_file = run_dir / AGENT_FILE
    if not agent_file.exists() or not (run_dir / "config.json").exists():
        raise ConfigError(f"data.policy={run_dir} holds no {AGENT_FILE} and config.json: pass the run directory "
                          "of a finished `python scripts/train_agent.py` run (its final agent)")
    # what decides the frames: the agent's weights and its run's settings (env, encoder options), not where it lies
    key = {"agent": file_digest(agent_file), "config": file_digest(run_dir / "config.json")}

    def collect(path: Path, spec: PreprocessSpec) -> FrameDataset:
        agent = load_agent(run_dir, device=cfg.device, n_envs=AGENT_ENVS, seed=cfg.seed)
        try:
            if agent.config.env.id != cfg.env.id:
                raise ConfigError(f"data.policy={run_dir} plays {agent.config.env.id}, this run pretrains on "
                                  f"{cfg.env.id}: pass an agent of the same game, or env={agent.config.env.name}")
            extras = [name for name in cfg.data.extras if name in VECTOR_EXTRAS]
            if len(extras) < len(cfg.data.extras):
                log.info("frames of an agent's play: storing %s, not %s (its env exposes no RAM)", extras,
                         sorted(set(cfg.data.extras) - set(extras)))
            return collect_agent_frames(agent, spec, cfg.data.frames, path, extras=extras,
                                        info={"key": key, "policy": str(run_dir)}, progress=cfg.progress,
                                        shard_size=cfg.data.shard_size)
        finally:
            agent.env.close()

    return PolicyFrames(key, collect)


def collect_agent_frames(
    agent: LoadedAgent,
    spec: PreprocessSpec,
    num_frames: int,
    path: str | Path,
    *,
    extras: Sequence[str] = VECTOR_EXTRAS,
    deterministic: bool = False,
    info: dict[str, Any] | None = None,
    progress: bool = True,
    shard_size: int = 50_000,
) -> FrameDataset:
    """Store ``num_frames`` frames of ``agent`` playing in every env of its env (actions sampled from its policy
    unless ``deterministic``); the frames are the agent's preprocessed ones and must have ``spec``'s shape.
    Each env's episodes reach the dataset whole (:class:`~vaerl.data.vector_collect.EpisodeBuffers`)."""
    unknown = set(extras) - set(VECTOR_EXTRAS)
    if unknown:
        raise DatasetError(f"an agent's env records {VECTOR_EXTRAS}, not {sorted(unknown)}")
    env, model, observations = agent.env, agent.model, agent.observations
    obs = env.reset()
    first = observations.frame(env, obs)
    if first.shape != spec.frame_shape or first.dtype != np.uint8:
        raise DatasetError(f"the agent sees {first.dtype} frames {first.shape}, the encoder to pretrain needs uint8 "
                           f"{spec.frame_shape}: pretrain with the agent's env settings (env.size, env.grayscale)")
    writer = FrameDatasetWriter(path, spec.frame_shape, episode_extra_specs(env.action_space, extras), shard_size,
                                info={**(info or {}), "spec": spec.to_dict(), "num_envs": env.num_envs})
    episodes = EpisodeBuffers(writer, env.num_envs, num_frames, extras)
    with writer, progress_bar(num_frames, f"collect agent frames ({env.num_envs} envs)", "frame",
                                      bar=progress, logger=log) as bar:
        while episodes.collected < num_frames:
            frames = np.stack([observations.frame(env, obs, i) for i in range(env.num_envs)])
            actions, _ = model.predict(obs, deterministic=deterministic)
            obs, rewards, dones, _ = env.step(actions)
            episodes.add(frames, executed_actions(env, actions), rewards, dones)
            bar.update(min(env.num_envs, num_frames - bar.n))
        episodes.flush_all()
        writer.close()
    dataset = FrameDataset(path)
    log.info("collected %d frames of the agent's play in %d episodes", len(dataset), dataset.meta.num_episodes)
    return dataset


def executed_actions(env: Any, chosen: np.ndarray) -> np.ndarray:
    """The actions ``env`` last played: an Atari vector env presses FIRE for the policy's first action of each game
    and life (:class:`vaerl.envs.vector.AtariVecEnv`), and the dataset stores what was played, not what was asked."""
    played = getattr(getattr(env, "unwrapped", env), "executed_actions", None)
    return chosen if played is None else np.asarray(played).reshape(np.shape(chosen))
