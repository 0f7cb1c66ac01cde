"""PreprocessSpec: layouts, dtypes, resizing, Dict observations and its error messages."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
from gymnasium import spaces

from vaerl.envs import FakeFrameEnv
from vaerl.errors import ObservationError
from vaerl.preprocessing import PreprocessSpec


@pytest.mark.parametrize(
    "kwargs,size,grayscale,expected",
    [
        ({"size": (84, 84), "channels": 1, "layout": "hw"}, None, True, (1, 84, 84)),
        ({"size": (96, 96), "channels": 3, "layout": "chw"}, (64, 64), False, (3, 64, 64)),
        ({"size": (96, 96), "channels": 3, "layout": "hwc", "dtype": "float32"}, (48, 40), True, (1, 48, 40)),
        ({"size": (50, 70), "channels": 1, "layout": "hwc"}, None, True, (1, 50, 70)),
    ],
)
def test_spec_turns_any_image_env_into_uint8_nchw(kwargs, size, grayscale, expected) -> None:
    env = FakeFrameEnv(**kwargs)
    spec = PreprocessSpec.from_space(env.observation_space, size=size, grayscale=grayscale)
    obs, _ = env.reset(seed=0)
    frames = spec(obs[None])
    assert frames.shape == (1, *expected) and frames.dtype == np.uint8
    assert spec.frame_shape == expected


def test_dict_observation_uses_image_key() -> None:
    env = FakeFrameEnv(size=(96, 96), channels=3, layout="chw", image_key="pixels")
    spec = PreprocessSpec.from_space(env.observation_space, size=(64, 64), grayscale=False, image_key="pixels")
    obs, _ = env.reset(seed=0)
    frames = spec({k: v[None] for k, v in obs.items()})
    assert frames.shape == (1, 3, 64, 64)


def test_values_are_preserved_without_resize() -> None:
    env = FakeFrameEnv(size=(20, 30), channels=3, layout="chw")
    obs, _ = env.reset(seed=0)
    spec = PreprocessSpec.from_space(env.observation_space, grayscale=False)
    np.testing.assert_array_equal(spec(obs[None])[0], obs)


def test_float_frames_are_scaled_to_uint8() -> None:
    float_env = FakeFrameEnv(size=(16, 16), dtype="float32")
    uint_env = FakeFrameEnv(size=(16, 16))
    f_obs, _ = float_env.reset(seed=3)
    u_obs, _ = uint_env.reset(seed=3)
    spec_f = PreprocessSpec.from_space(float_env.observation_space)
    spec_u = PreprocessSpec.from_space(uint_env.observation_space)
    np.testing.assert_array_equal(spec_f(f_obs[None]), spec_u(u_obs[None]))


def test_gray_conversion_matches_itu_601() -> None:
    rgb = np.zeros((1, 2, 2, 3), np.uint8)
    rgb[...] = (200, 100, 50)  # distinct channels: swapped weights give another gray
    spec = PreprocessSpec(source_shape=(2, 2, 3), layout="hwc", size=(2, 2), grayscale=True)
    assert int(spec(rgb)[0, 0, 0, 0]) == round(0.299 * 200 + 0.587 * 100 + 0.114 * 50) == 124


def test_spec_round_trips_through_dict() -> None:
    spec = PreprocessSpec((3, 96, 96), "uint8", "chw", (64, 64), False, 4, "pixels")
    assert PreprocessSpec.from_dict(spec.to_dict()) == spec
    assert spec.input_shape == (12, 64, 64)


def test_non_image_env_is_rejected_with_explanation() -> None:
    with pytest.raises(ObservationError, match="not images"):
        PreprocessSpec.from_space(gym.make("CartPole-v1").observation_space)


def test_dict_without_image_key_lists_candidates() -> None:
    space = spaces.Dict({"pixels": spaces.Box(0, 255, (8, 8, 3), np.uint8), "state": spaces.Box(-1, 1, (2,))})
    with pytest.raises(ObservationError, match="image_key.*pixels"):
        PreprocessSpec.from_space(space)


def test_ambiguous_layout_asks_for_it() -> None:
    with pytest.raises(ObservationError, match="layout='hwc' or layout='chw'"):
        PreprocessSpec.from_space(spaces.Box(0, 255, (3, 8, 3), np.uint8))


def test_mismatching_env_names_the_difference_and_the_fix() -> None:
    spec = PreprocessSpec.from_space(FakeFrameEnv(size=(84, 84)).observation_space)
    other = FakeFrameEnv(size=(96, 96), channels=3, dtype="float32").observation_space
    problems = spec.mismatches(other)
    assert any("(96, 96, 3)" in p and "source_shape" in p for p in problems)
    assert any("source_dtype='float32'" in p for p in problems)
    with pytest.raises(ObservationError, match="do not match"):
        spec.check_space(other)


def test_wrong_batch_shape_is_explained() -> None:
    spec = PreprocessSpec.from_space(FakeFrameEnv(size=(16, 16)).observation_space)
    with pytest.raises(ObservationError, match="add a leading axis"):
        spec(np.zeros((16, 16, 1), np.uint8))
