"""Demonstration recording and the demo file: round trip, experts, and every kind of bad file."""

from __future__ import annotations

from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest

from agents.bc.collect import CollectDemosConfig, collect_demos
from vaerl.data.demos import describe_space, load_demos, record_demos, save_demos, space_from_description
from vaerl.envs import EnvConfig
from vaerl.envs.obstacle import OBSTACLE_ENV_ID, ObstacleEnv
from vaerl.errors import ConfigError, DatasetError
from vaerl.rollout import CallbackPolicy


def obstacle_config(**kwargs) -> EnvConfig:
    return EnvConfig(name="obstacle", id=OBSTACLE_ENV_ID, kind="gym", kwargs=kwargs)


@pytest.fixture(scope="module")
def demos():
    env = gym.make(OBSTACLE_ENV_ID)
    return record_demos(env, env.unwrapped.scripted_expert(0), 6, seed=0, expert="scripted")


@pytest.fixture
def demo_file(tmp_path: Path, demos) -> Path:
    return save_demos(demos, tmp_path / "demos.npz")


def test_recording_holds_whole_episodes_with_labels(demos) -> None:
    meta = demos.metadata
    assert meta.env_id == OBSTACLE_ENV_ID and meta.episodes == 6 and meta.steps == demos.num_steps
    assert demos.observations.shape == (demos.num_steps, 7) and demos.actions.shape == (demos.num_steps, 2)
    assert demos.episode_lengths.sum() == demos.num_steps and (demos.episode_lengths > 10).all()
    assert demos.terminated.all()  # every expert episode ends at the goal
    np.testing.assert_array_equal(demos.episode_info["is_success"], np.ones(6))
    assert set(np.unique(demos.episode_info["side"])) <= {-1.0, 1.0}
    # each episode's first observation is a reset observation: the agent at the start
    starts = np.flatnonzero(np.r_[True, np.diff(demos.episode) != 0])
    np.testing.assert_allclose(demos.observations[starts, :2], np.tile([0.5, 0.08], (6, 1)), atol=1e-6)


def test_round_trip_is_exact(demos, demo_file: Path) -> None:
    loaded = load_demos(demo_file)
    for name in ("observations", "final_observations", "actions", "rewards", "episode", "terminated"):
        np.testing.assert_array_equal(getattr(loaded, name), getattr(demos, name))
    assert loaded.episode_info.keys() == demos.episode_info.keys() == {"is_success", "mode", "side"}
    # the observation after each episode's last action: the agent inside the goal
    assert np.all(np.linalg.norm(loaded.final_observations[:, :2] - loaded.final_observations[:, 2:4], axis=1) < 0.06)
    assert loaded.metadata == demos.metadata
    assert loaded.action_space == gym.spaces.Box(-1.0, 1.0, (2,), np.float32)


def test_recording_is_deterministic_per_seed() -> None:
    def record(seed: int):
        env = gym.make(OBSTACLE_ENV_ID)
        return record_demos(env, env.unwrapped.scripted_expert(seed), 4, seed=seed)

    a, b, c = record(1), record(1), record(2)
    np.testing.assert_array_equal(a.actions, b.actions)
    assert a.actions.shape != c.actions.shape or not np.array_equal(a.actions, c.actions)


def test_callback_policy_and_obs_transform() -> None:
    """A person (here a fixed controller) through a callback, storing transformed observations."""
    starts = []
    policy = CallbackPolicy(lambda obs: np.array([0.0, 1.0], np.float32), on_episode_start=lambda: starts.append(1))
    env = ObstacleEnv(max_steps=5)
    demos = record_demos(env, policy, 3, seed=0, obs_transform=lambda obs: obs[:2] * 2,
                         transform_name="encoder:fake.safetensors")
    assert len(starts) == 3 and demos.observations.shape[1:] == (2,)
    assert demos.metadata.obs_transform == "encoder:fake.safetensors"
    assert demos.metadata.stored_obs_shape == (2,) and demos.metadata.observation_space["shape"] == [7]
    with pytest.raises(ConfigError, match="transform_name"):
        record_demos(env, policy, 1, seed=0, obs_transform=lambda obs: obs)


def test_discrete_and_pixel_demos_round_trip(tmp_path: Path) -> None:
    env = ObstacleEnv(obs_type="pixels", image_size=24, continuous=False)
    demos = record_demos(env, env.scripted_expert(0), 2, seed=0)
    loaded = load_demos(save_demos(demos, tmp_path / "pix.npz"))
    assert loaded.observations.dtype == np.uint8 and loaded.observations.shape[1:] == (24, 24, 3)
    assert loaded.actions.dtype == np.int64 and loaded.action_space == gym.spaces.Discrete(8)


def test_space_descriptions_round_trip() -> None:
    for space in (gym.spaces.Box(-1.0, 1.0, (2,), np.float32), gym.spaces.Discrete(5, start=1),
                  gym.spaces.Box(0, 255, (8, 8, 3), np.uint8),
                  gym.spaces.Box(np.array([0.0, -np.inf]), np.array([1.0, np.inf]), dtype=np.float64)):
        assert space_from_description(describe_space(space)) == space


# ---------------------------------------------------------------------------------------------- bad input
def test_missing_empty_truncated_and_corrupt_files(tmp_path: Path, demo_file: Path) -> None:
    with pytest.raises(DatasetError, match="no demo file.*collect_demos"):
        load_demos(tmp_path / "nope.npz")
    empty = tmp_path / "empty.npz"
    empty.touch()
    with pytest.raises(DatasetError, match="empty"):
        load_demos(empty)
    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes(demo_file.read_bytes()[: demo_file.stat().st_size // 2])
    with pytest.raises(DatasetError, match="truncated or corrupt"):
        load_demos(truncated)
    corrupt = tmp_path / "corrupt.npz"
    corrupt.write_bytes(b"PK\x03\x04" + np.random.default_rng(0).bytes(500))
    with pytest.raises(DatasetError, match="truncated or corrupt"):
        load_demos(corrupt)
    with pytest.raises(DatasetError, match="directory"):
        load_demos(tmp_path)


def test_foreign_npz_and_inconsistent_files(tmp_path: Path, demos) -> None:
    foreign = tmp_path / "foreign.npz"
    np.savez(foreign, x=np.zeros(3))
    with pytest.raises(DatasetError, match="not a vaerl demonstration file"):
        load_demos(foreign)
    demos.metadata.steps += 1
    try:
        with pytest.raises(DatasetError, match="metadata says"):
            save_demos(demos, tmp_path / "bad.npz")
    finally:
        demos.metadata.steps -= 1
    assert not (tmp_path / "bad.npz").exists()


def test_pickled_arrays_are_never_loaded(tmp_path: Path, demo_file: Path) -> None:
    with np.load(demo_file, allow_pickle=False) as archive:
        arrays = {k: archive[k] for k in archive.files}
    arrays["actions"] = np.array([object()] * len(arrays["actions"]), dtype=object)
    evil = tmp_path / "evil.npz"
    np.savez(evil, **arrays)
    with pytest.raises(DatasetError, match="truncated or corrupt"):
        load_demos(evil)


def test_a_failed_save_leaves_the_old_file(tmp_path: Path, demos, demo_file: Path) -> None:
    before = demo_file.read_bytes()
    broken = load_demos(demo_file)
    broken.rewards = broken.rewards[:-1]
    with pytest.raises(DatasetError, match="rewards"):
        save_demos(broken, demo_file)
    assert demo_file.read_bytes() == before


def test_demos_that_do_not_fit_the_env(demos) -> None:
    demos.check_env(gym.make(OBSTACLE_ENV_ID))
    with pytest.raises(DatasetError, match="observation space is Box.*64, 64, 3"):
        demos.check_env(gym.make(OBSTACLE_ENV_ID, obs_type="pixels"))
    with pytest.raises(DatasetError, match="action space is Discrete"):
        demos.check_env(gym.make(OBSTACLE_ENV_ID, continuous=False))


# ---------------------------------------------------------------------------------------------- collect_demos
def test_collect_demos_writes_and_refuses_to_overwrite(tmp_path: Path) -> None:
    out = tmp_path / "d.npz"
    config = CollectDemosConfig(env=obstacle_config(), episodes=3, out=str(out))
    assert collect_demos(config) == out
    before = out.read_bytes()
    assert load_demos(out).metadata.env_config["id"] == OBSTACLE_ENV_ID
    with pytest.raises(ConfigError, match="exists.*overwrite=true"):
        collect_demos(config)
    assert out.read_bytes() == before
    with pytest.raises(ConfigError, match="no SB3 agent"):
        collect_demos(CollectDemosConfig(env=obstacle_config(), expert=str(tmp_path / "x.zip"), out=str(tmp_path / "e.npz")))
    with pytest.raises(ConfigError, match="expert_algo"):
        collect_demos(CollectDemosConfig(env=obstacle_config(), expert=str(out), expert_algo="PP0",
                                         out=str(tmp_path / "e.npz")))
    assert not (tmp_path / "e.npz").exists()


def test_collect_demos_from_a_trained_sb3_agent(tmp_path: Path, one_thread) -> None:
    from stable_baselines3 import PPO

    model = PPO("MlpPolicy", gym.make(OBSTACLE_ENV_ID), n_steps=64, batch_size=32, n_epochs=1, seed=0,
                policy_kwargs={"net_arch": [16]}, device="cpu")
    model.learn(128)
    agent = tmp_path / "ppo.zip"
    model.save(agent)
    out = collect_demos(CollectDemosConfig(env=obstacle_config(max_steps=20), expert=str(agent), episodes=2,
                                           out=str(tmp_path / "ppo_demos.npz"), device="cpu"))
    demos = load_demos(out)
    assert demos.num_episodes == 2 and demos.metadata.expert.startswith("sb3:PPO:")
    # an agent for another env is refused before anything is recorded
    with pytest.raises(ConfigError, match="acts in"):
        collect_demos(CollectDemosConfig(env=obstacle_config(continuous=False), expert=str(agent), episodes=1,
                                         out=str(tmp_path / "other.npz"), device="cpu"))


def test_collect_demos_stores_encoder_latents(tmp_path: Path) -> None:
    """The latent option end to end, with a tiny (untrained) vaerl encoder for the pixel variant."""
    from vaerl.checkpoint import save_checkpoint
    from vaerl.envs import make_env, preprocess_spec
    from vaerl.models import build_model

    env_config = EnvConfig(name="obstacle_pixels", id=OBSTACLE_ENV_ID, kind="gym",
                           kwargs={"obs_type": "pixels", "image_size": 32}, size=(32, 32))
    spec = preprocess_spec(env_config, make_env(env_config))
    model = build_model("vae", input_shape=spec.input_shape, latent_dim=4, hidden_dim=16,
                        encoder_layers=[[8, 4, 2, 1], [16, 4, 2, 1]])
    encoder = save_checkpoint(tmp_path / "encoder.safetensors", model, spec, env_config.to_dict())
    out = collect_demos(CollectDemosConfig(env=env_config, episodes=2, out=str(tmp_path / "latents.npz"),
                                           encoder=str(encoder), device="cpu"))
    demos = load_demos(out)
    assert demos.observations.shape == (demos.num_steps, 4 + 14 * 14) and demos.observations.dtype == np.float32
    assert demos.metadata.obs_transform == f"encoder:{encoder}"
    assert demos.metadata.observation_space["shape"] == [32, 32, 3]  # the env's own space, for checks
