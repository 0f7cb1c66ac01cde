"""Env construction from config: the Atari presets and custom envs."""

from __future__ import annotations

import numpy as np
import pytest
import yaml
from conftest import REPO

from vaerl.envs import EnvConfig, make_env, preprocess_spec
from vaerl.errors import ConfigError, ObservationError

ATARI = sorted(p.stem for p in (REPO / "configs" / "env").glob("*.yaml")
               if "base/atari@_here_" in p.read_text())


def atari_config(name: str) -> EnvConfig:
    base = yaml.safe_load((REPO / "configs/env/base/atari.yaml").read_text())
    own = {k: v for k, v in yaml.safe_load((REPO / f"configs/env/{name}.yaml").read_text()).items() if k != "defaults"}
    return EnvConfig(**{**base, **own})


@pytest.mark.atari
@pytest.mark.parametrize("name", ATARI)
def test_atari_presets_build_with_zoo_preprocessing(name: str) -> None:
    config = atari_config(name)
    env = make_env(config, seed=0)
    obs, _ = env.reset(seed=0)
    assert obs.shape == (84, 84) and obs.dtype == np.uint8
    assert env.unwrapped._frameskip == 1  # AtariPreprocessing does the skipping with max-pooling
    assert env.unwrapped.ale.getFloat("repeat_action_probability") == 0.0
    assert preprocess_spec(config, env).input_shape == (1, 84, 84)


def test_at_least_the_issue_games_ship() -> None:
    assert {"Breakout", "Pong", "Boxing", "SpaceInvaders", "MsPacman"} <= set(ATARI)


@pytest.mark.atari
def test_atari_rgb_and_sticky_actions() -> None:
    config = EnvConfig(grayscale=False, sticky_actions=0.25)
    env = make_env(config)
    obs, _ = env.reset(seed=0)
    assert obs.shape == (84, 84, 3)
    assert env.unwrapped.ale.getFloat("repeat_action_probability") == pytest.approx(0.25)
    assert preprocess_spec(config, env).input_shape == (3, 84, 84)


def test_custom_env_by_registered_id_and_by_class_path() -> None:
    by_id = EnvConfig(name="x", id="vaerl/FakeFrames-v0", kind="gym", kwargs={"size": (10, 12)}, max_episode_steps=5)
    by_class = EnvConfig(name="x", id="vaerl.envs.fake:FakeFrameEnv", kind="gym", kwargs={"size": (10, 12)},
                         max_episode_steps=5)
    for config in (by_id, by_class):
        env = make_env(config)
        assert env.reset(seed=0)[0].shape == (10, 12, 1)
        truncated = [env.step(env.action_space.sample())[3] for _ in range(5)]
        assert truncated == [False] * 4 + [True]  # max_episode_steps holds either way (the env's own is 100)


def test_custom_dict_env_needs_its_image_key() -> None:
    config = EnvConfig(name="x", id="vaerl/FakeFrames-v0", kind="gym",
                       kwargs={"size": (96, 96), "channels": 3, "layout": "chw", "image_key": "pixels"})
    with pytest.raises(ObservationError, match="image_key"):
        preprocess_spec(config, make_env(config))
    config.image_key, config.size = "pixels", (64, 64)
    assert preprocess_spec(config, make_env(config)).frame_shape == (1, 64, 64)


def test_non_image_env_is_refused() -> None:
    config = EnvConfig(name="cartpole", id="CartPole-v1", kind="gym")
    with pytest.raises(ObservationError, match="not images"):
        preprocess_spec(config, make_env(config))


def test_bad_ids_and_kinds_are_explained() -> None:
    with pytest.raises(ConfigError, match="module:Class|ClassName"):
        make_env(EnvConfig(name="x", id="NoSuchEnv-v9", kind="gym"))
    with pytest.raises(ConfigError, match="cannot import"):
        make_env(EnvConfig(name="x", id="no_such_module:Env", kind="gym"))
    with pytest.raises(ConfigError, match="env.kind"):
        EnvConfig(kind="mujoco")


def test_seed_makes_fake_env_and_action_space_reproducible() -> None:
    config = EnvConfig(name="x", id="vaerl/FakeFrames-v0", kind="gym", kwargs={"size": (16, 16)})
    a, b = make_env(config, seed=4), make_env(config, seed=4)
    np.testing.assert_array_equal(a.reset(seed=4)[0], b.reset(seed=4)[0])
    assert [a.action_space.sample() for _ in range(5)] == [b.action_space.sample() for _ in range(5)]


@pytest.mark.parametrize(("radius", "pixels"), [(0, 1), (2, 25), (None, 9)])
def test_fake_ball_is_a_square_of_its_radius(radius: int | None, pixels: int) -> None:
    from vaerl.envs.fake import FakeFrameEnv

    env = FakeFrameEnv(size=(64, 64), ball_radius=radius)  # default radius at 64x64: 64 // 42 = 1
    frame, _ = env.reset(seed=0)
    assert int((frame == 255).sum()) == pixels


def test_negative_fake_ball_radius_is_refused() -> None:
    from vaerl.envs.fake import FakeFrameEnv

    with pytest.raises(ValueError, match="one-pixel ball"):
        FakeFrameEnv(ball_radius=-1)
