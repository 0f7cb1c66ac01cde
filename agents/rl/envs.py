"""The envs of an agent run: one observation pipeline (agents/rl/observations.py) over identical env settings.

Atari games run in ale-py's native vector env (:class:`vaerl.envs.vector.AtariVecEnv`), other envs
in SB3's ``DummyVecEnv``. Training and evaluation envs differ only in reward clipping; both end an
episode at each lost life like the RL Zoo, and both report whole games in ``info["episode"]``.
"""

from __future__ import annotations

import logging
from functools import partial
from typing import Any

import gymnasium as gym
from stable_baselines3.common.monitor import Monitor
from stable_baselines3.common.vec_env import DummyVecEnv, VecEnv

from agents.rl.config import TrainAgentConfig
from agents.rl.observations import Observations, observations_for
from vaerl.checkpoint import checkpoint_file
from vaerl.encoder import Encoder, check_encoder_env, load_encoder
from vaerl.envs.make import EnvConfig, make_env
from vaerl.envs.vector import AtariVecEnv
from vaerl.errors import CheckpointError, ConfigError, ObservationError
from vaerl.preprocessing import image_space
from vaerl.training.pretrain import unfinished_run

log = logging.getLogger("agents")


def run_observations(cfg: TrainAgentConfig, device: Any) -> Observations:
    """The observation pipeline of a run, with its encoder loaded and checked for latent runs."""
    encoder = load_run_encoder(cfg, device) if cfg.latent else None
    has_images = cfg.latent or _is_image(_observation_space(cfg.env), cfg.env.image_key)
    return observations_for(cfg, encoder, has_images)


def load_run_encoder(cfg: TrainAgentConfig, device: Any) -> Encoder:
    """The encoder of a latent run, checked against the run's env; errors say how to get a fitting one."""
    _check_image_env(cfg)
    path = cfg.pretrained_encoder_path()
    file = checkpoint_file(path)
    if not file.exists():
        how = (f"python scripts/pretrain_vae.py env={cfg.env.name} model={cfg.encoder.model} seed={cfg.encoder.seed}"
               if not cfg.encoder.path else "check the path")
        raise CheckpointError(f"latent=true needs a pretrained encoder for {cfg.env.name}, and there is none at {file}."
                              f" Make one with `{how}`, or pass encoder=<path to encoder.safetensors>"
                              f" (or train the pixel baseline with latent=false)")
    encoder = load_encoder(file, device, spec_override=cfg.encoder.preprocess or None)
    if unfinished_run(file.parent):
        log.warning("the encoder at %s is an intermediate checkpoint (step %s) of a pretraining run that has not "
                    "finished: finish it by running its command again, or go on with this one knowingly", file,
                    encoder.info.extra.get("step", "?"))
    if not cfg.encoder.preprocess:
        check_encoder_env(encoder.info, cfg.env, where=f"the encoder at {file}", target="this run's env",
                          fix=f"Use the env settings it was trained with, pretrain one for these "
                              f"(`python scripts/pretrain_vae.py env={cfg.env.name} ...`), or pass "
                              f"encoder=<another checkpoint>")
    return encoder


def make_run_env(cfg: TrainAgentConfig, observations: Observations, *, n_envs: int, seed: int,
                 training: bool) -> VecEnv:
    """The vectorised env of a run with its observation wrapper; ``training`` clips rewards."""
    venv = _base_env(cfg.env, n_envs, seed, training, observations.base_frame_stack())
    try:
        return observations.wrap(venv)
    except Exception:
        venv.close()
        raise


def _base_env(config: EnvConfig, n_envs: int, seed: int, training: bool, frame_stack: int) -> VecEnv:
    if config.is_atari:
        venv: VecEnv = AtariVecEnv(config, n_envs, frame_stack=frame_stack, episodic_life=True, clip_rewards=training)
    else:
        venv = DummyVecEnv([partial(_monitored, config, seed + i) for i in range(n_envs)])
    venv.seed(seed)
    return venv


def _monitored(config: EnvConfig, seed: int) -> gym.Env:
    return Monitor(make_env(config, seed=seed))


def _is_image(space: gym.Space, image_key: str | None) -> bool:
    try:
        image_space(space, image_key)
    except ObservationError:
        return False
    return True


def _observation_space(config: EnvConfig) -> gym.Space:
    probe = make_env(config)
    try:
        return probe.observation_space
    finally:
        probe.close()


def _check_image_env(cfg: TrainAgentConfig) -> None:
    space = _observation_space(cfg.env)
    key = cfg.encoder.preprocess.get("image_key", cfg.env.image_key)
    if isinstance(space, gym.spaces.Dict) and key is None:
        return  # the encoder's own spec names the key; the wrapper checks it
    if not _is_image(space, key):
        raise ConfigError(f"latent=true needs image observations, but {cfg.env.id} observes {space}: there is "
                          f"nothing to encode. Train on its observations directly with latent=false")
