"""The envs of an agent run: latent, fine-tuning or pixel observations over identical env settings.

Atari games run in ale-py's native vector env (:class:`vaerl.envs.vector.AtariVecEnv`), other envs
in SB3's ``DummyVecEnv``. Training and evaluation envs differ only in reward clipping; both end an
episode at each lost life like the RL Zoo, and both report whole games in ``info["episode"]``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import partial
from typing import Any

import gymnasium as gym
from stable_baselines3.common.monitor import Monitor
from stable_baselines3.common.vec_env import DummyVecEnv, VecEnv

from agents.rl.config import TrainAgentConfig
from agents.rl.features import EncoderFeatures, window_frames
from vaerl.checkpoint import checkpoint_file
from vaerl.encoder import Encoder, load_encoder
from vaerl.envs.make import EnvConfig, make_env, preprocess_spec
from vaerl.envs.vector import AtariVecEnv
from vaerl.errors import CheckpointError, ConfigError, ObservationError
from vaerl.preprocessing import image_space
from vaerl.wrappers import LatentVecEnv, PreprocessedVecEnv

PIXEL_FRAME_STACK = 4  # the Nature DQN / RL Zoo Atari input: 4 stacked 84x84 gray frames
# env settings that change what frames look like: an encoder is only valid under the ones it saw
# (constructor kwargs are opaque: the observation-space check catches those that change frame shapes)
FRAME_SETTINGS = ("id", "frame_skip", "screen_size", "grayscale", "size", "layout", "image_key", "frame_stack")


@dataclass(frozen=True)
class Observations:
    """What the agent observes: ``latent`` (frozen encoder in the env), ``finetune`` (frames into an
    encoder inside the policy), ``pixels`` (stacked frames, NatureCNN) or ``raw`` (non-image envs)."""

    kind: str
    encoder: Encoder | None = None

    def policy(self, settings: dict[str, Any], space: gym.Space) -> str:
        if self.kind == "raw":  # the pixel settings' CnnPolicy has no images to look at here
            return "MultiInputPolicy" if isinstance(space, gym.spaces.Dict) else "MlpPolicy"
        return settings.get("policy", "CnnPolicy" if self.kind == "pixels" else "MlpPolicy")

    def policy_kwargs(self, cfg: TrainAgentConfig) -> dict[str, Any]:
        """Extra policy arguments: the encoder as features extractor when fine-tuning."""
        if self.kind != "finetune":
            return {}
        assert self.encoder is not None
        return {
            "features_extractor_class": EncoderFeatures,
            "features_extractor_kwargs": {
                "kind": self.encoder.kind, "model_config": self.encoder.info.model_config,
                "frames_per_input": self.encoder.spec.frame_stack, "stack": cfg.encoder.stack,
                "stack_mode": cfg.encoder.stack_mode, "trainable": True,
            },
        }


def observations_for(cfg: TrainAgentConfig, encoder: Encoder | None) -> Observations:
    if not cfg.latent:
        return Observations("pixels" if _is_image(_observation_space(cfg.env), cfg.env.image_key) else "raw")
    return Observations("finetune" if cfg.encoder.finetune else "latent", encoder)


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
    differences = _frame_setting_differences(encoder.info.env, cfg.env)
    if differences and not cfg.encoder.preprocess:
        raise CheckpointError(
            f"the encoder at {file} was pretrained on other frames than this run's env: {'; '.join(differences)}. "
            f"Use the env settings it was trained with, pretrain one for these "
            f"(`python scripts/pretrain_vae.py env={cfg.env.name} ...`), or pass encoder=<another checkpoint>"
        )
    return encoder


def make_run_env(
    cfg: TrainAgentConfig, observations: Observations, *, n_envs: int, seed: int, training: bool
) -> VecEnv:
    """The vectorised env of a run with its observation wrapper; ``training`` clips rewards."""
    if observations.kind == "pixels" and cfg.env.is_atari and cfg.env.grayscale:
        # ale-py stacks natively, faster than a Python frame stack
        return _base_env(cfg.env, n_envs, seed, training, PIXEL_FRAME_STACK)
    venv = _base_env(cfg.env, n_envs, seed, training, 1)
    try:
        if observations.kind == "latent":
            assert observations.encoder is not None
            return LatentVecEnv(venv, observations.encoder, mode=cfg.encoder.mode, stack=cfg.encoder.stack,
                                stack_mode=cfg.encoder.stack_mode)
        if observations.kind == "finetune":
            assert observations.encoder is not None
            spec = observations.encoder.spec
            window = window_frames(spec.frame_stack, cfg.encoder.stack, cfg.encoder.stack_mode)
            return PreprocessedVecEnv(venv, spec.replace(frame_stack=1), frame_stack=window)
        if observations.kind == "pixels":
            return PreprocessedVecEnv(venv, preprocess_spec(cfg.env, venv), frame_stack=PIXEL_FRAME_STACK)
        return venv
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


def _frame_setting_differences(trained: dict[str, Any], env: EnvConfig) -> list[str]:
    current = json.loads(json.dumps(env.to_dict(), default=str))
    trained = json.loads(json.dumps(trained, default=str))
    return [f"env.{key}={current.get(key)!r} here, {trained[key]!r} in pretraining" for key in FRAME_SETTINGS
            if key in trained and trained[key] != current.get(key)]
