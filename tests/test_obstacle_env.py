"""The multimodal obstacle env and its scripted expert."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

from vaerl.envs.obstacle import LEFT, OBSTACLE_ENV_ID, RIGHT, THREE_WAYS_ENV_ID, ObstacleEnv, ObstacleExpert


def run_expert(env: gym.Env, episodes: int, seed: int = 0) -> list[dict]:
    expert = env.unwrapped.scripted_expert(seed)
    finals = []
    for index in range(episodes):
        obs, _ = env.reset(seed=seed if index == 0 else None)
        done, start = False, True
        while not done:
            action, _ = expert.predict(obs, episode_start=np.array([start]))
            obs, _, terminated, truncated, info = env.step(action)
            start, done = False, terminated or truncated
        finals.append(info)
    return finals


@pytest.mark.parametrize("continuous", [True, False])
def test_expert_always_succeeds_and_uses_both_sides(continuous: bool) -> None:
    finals = run_expert(ObstacleEnv(continuous=continuous), 40)
    assert all(f["is_success"] and not f["collision"] for f in finals)
    left = sum(f["side"] == LEFT for f in finals)
    assert sum(f["side"] == RIGHT for f in finals) + left == 40
    assert 10 <= left <= 30  # p = 1/2 per episode
    assert [f["mode"] for f in finals] == [0 if f["side"] == LEFT else 1 for f in finals]


@pytest.mark.parametrize("continuous", [True, False])
def test_three_ways_expert_succeeds_through_each_passage_uniformly(continuous: bool) -> None:
    env = gym.make(THREE_WAYS_ENV_ID, continuous=continuous)
    assert env.unwrapped.mode_names == ("left", "middle", "right")
    assert env.observation_space.shape == (9,)  # agent, goal, two obstacles, radius
    finals = run_expert(env, 90)
    assert all(f["is_success"] and not f["collision"] for f in finals)
    counts = np.bincount([f["mode"] for f in finals], minlength=3)
    assert counts.sum() == 90 and counts.min() >= 18  # p = 1/3 each
    assert all(f["side"] == 0 for f in finals)  # "side" describes one obstacle only


def test_the_average_of_the_three_ways_is_the_middle_one() -> None:
    """Why the three-way task still tells policies apart: the mean path succeeds, through one mode only."""
    env = gym.make(THREE_WAYS_ENV_ID)
    env.reset(seed=0)
    for _ in range(100):
        _, _, terminated, truncated, info = env.step(np.array([0.0, 1.0], np.float32))
        if terminated or truncated:
            break
    assert info["is_success"] and info["mode"] == 1


def test_random_starts_cover_the_field_clear_of_obstacles() -> None:
    env = ObstacleEnv(random_start=True, obstacle_x=(0.3, 0.7), obstacle_radius=(0.08, 0.1))
    starts = []
    for seed in range(60):
        env.reset(seed=seed)
        starts.append(env.position.copy())
        assert env.layout.clearance(env.position) > env.speed
    starts = np.array(starts)
    assert starts[:, 1].max() > 0.7 and starts[:, 1].min() < 0.3 and np.ptp(starts[:, 0]) > 0.6


def test_expert_side_is_drawn_from_its_seed() -> None:
    sides = [[f["side"] for f in run_expert(ObstacleEnv(), 12, seed)] for seed in (3, 3, 4)]
    assert sides[0] == sides[1] and sides[0] != sides[2]


def test_registered_id_spaces_and_observation_types() -> None:
    env = gym.make(OBSTACLE_ENV_ID)
    obs, info = env.reset(seed=0)
    assert env.observation_space.shape == (7,) and env.observation_space.contains(obs)
    assert env.action_space == gym.spaces.Box(-1.0, 1.0, (2,), np.float32)
    assert {"is_success", "mode", "side", "position", "collision"} <= set(info)
    pixels = gym.make(OBSTACLE_ENV_ID, obs_type="pixels", image_size=32, continuous=False)
    frame, _ = pixels.reset(seed=0)
    assert frame.shape == (32, 32, 3) and frame.dtype == np.uint8 and pixels.observation_space.contains(frame)
    assert pixels.action_space == gym.spaces.Discrete(8)
    # the three objects are drawn in their own colours
    colours = {tuple(c) for c in frame.reshape(-1, 3)}
    assert {(200, 40, 40), (60, 180, 75), (30, 60, 220)} <= colours


def test_reset_is_deterministic_per_seed() -> None:
    env = ObstacleEnv()
    first, _ = env.reset(seed=5)
    again, _ = env.reset(seed=5)
    other, _ = env.reset(seed=6)
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other)


def test_walking_straight_up_hits_the_obstacle() -> None:
    """What an averaging policy does: both modes' mean action is 'straight ahead'."""
    env = ObstacleEnv()
    env.reset(seed=0)
    for _ in range(env.max_steps):
        _, reward, terminated, truncated, info = env.step(np.array([0.0, 1.0], np.float32))
        if terminated or truncated:
            break
    assert terminated and info["collision"] and not info["is_success"] and reward < -0.5


def test_actions_are_clipped_to_the_unit_disc() -> None:
    env = ObstacleEnv()
    env.reset(seed=0)
    start = env.position.copy()
    env.step(np.array([5.0, 0.0], np.float32))
    assert np.isclose(np.linalg.norm(env.position - start), env.speed)


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(ValueError, match="obs_type"):
        ObstacleEnv(obs_type="rgb")
    with pytest.raises(ValueError, match="obstacle_y"):
        ObstacleEnv(obstacle_y=(0.6, 0.4))
    with pytest.raises(ValueError, match="obstacle_x"):
        ObstacleEnv(obstacle_x=(0.7, 0.3))
    with pytest.raises(TypeError, match="ObstacleEnv"):
        ObstacleExpert(gym.make("CartPole-v1"))
