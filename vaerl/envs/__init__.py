"""Environments: construction from config, and vaerl's own small envs."""

from gymnasium.envs.registration import register, registry

from vaerl.envs.fake import FakeFrameEnv
from vaerl.envs.make import FAKE_ENV_ID, EnvConfig, make_env, preprocess_spec
from vaerl.envs.obstacle import OBSTACLE_ENV_ID, ObstacleEnv  # registers vaerl/Obstacle-v0

if FAKE_ENV_ID not in registry:
    register(id=FAKE_ENV_ID, entry_point="vaerl.envs.fake:FakeFrameEnv")

__all__ = ["FAKE_ENV_ID", "OBSTACLE_ENV_ID", "EnvConfig", "FakeFrameEnv", "ObstacleEnv", "make_env",
           "preprocess_spec"]
