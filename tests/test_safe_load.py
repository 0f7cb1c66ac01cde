"""SB3 agents and replay buffers load without running pickled code, and refuse files that would run some."""

from __future__ import annotations

import base64
import json
import os
import pickle
import zipfile
from pathlib import Path

import cloudpickle
import gymnasium as gym
import numpy as np
import pytest
from stable_baselines3 import DQN, PPO, SAC, TD3
from stable_baselines3.common import save_util
from stable_baselines3.common.noise import NormalActionNoise

from agents.safe_load import load_algorithm, load_replay_buffer
from vaerl.errors import CheckpointError


class MakeDirectory:
    """Unpickled by plain pickle, this creates a directory: a stand-in for any code a crafted file could run."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        return os.mkdir, (str(self.path),)


class ObjectDtypeWithoutItsFlags:
    """An object dtype whose pickled state says it holds no objects: numpy would then take raw bytes for pointers."""

    def __reduce__(self):
        dtype_state = np.dtype("O").__reduce__()[2]
        return np.dtype, ("O8", False, True), (*dtype_state[:-1], 0)


class ForgedObject:
    def __reduce__(self):
        scalar = np.float32(1).__reduce__()[0]  # numpy's scalar constructor, allowed for every numpy scalar
        return scalar, (ObjectDtypeWithoutItsFlags(), b"\x41" * 8)


@pytest.fixture(scope="module")
def saved_ppo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    env = gym.make("CartPole-v1")
    model = PPO("MlpPolicy", env, n_steps=32, batch_size=32, n_epochs=1, seed=0,
                policy_kwargs={"net_arch": [8]}, learning_rate=lambda progress: 3e-4 * progress)
    model.learn(64)
    path = tmp_path_factory.mktemp("ppo") / "agent.zip"
    model.save(path)
    return path


def observations() -> np.ndarray:
    return np.random.default_rng(0).normal(size=(16, 4)).astype(np.float32)


def rewrite_attribute(source: Path, target: Path, key: str, value: object) -> Path:
    """``source`` with the pickled attribute ``key`` replaced by ``value`` pickled as SB3 does."""
    with zipfile.ZipFile(source) as archive:
        files = {name: archive.read(name) for name in archive.namelist()}
    data = json.loads(files["data"])
    data[key] = {":type:": "crafted", ":serialized:": base64.b64encode(cloudpickle.dumps(value)).decode()}
    files["data"] = json.dumps(data).encode()
    with zipfile.ZipFile(target, "w") as archive:
        for name, content in files.items():
            archive.writestr(name, content)
    return target


def test_a_saved_agent_acts_the_same_with_nothing_unpickled_by_sb3(saved_ppo: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    expected, _ = PPO.load(saved_ppo).predict(observations(), deterministic=True)

    def refuse(*args, **kwargs):
        raise AssertionError("SB3 unpickled an attribute")

    monkeypatch.setattr(save_util.cloudpickle, "loads", refuse)
    model = load_algorithm(PPO, saved_ppo, acting_only=True)
    actions, _ = model.predict(observations(), deterministic=True)
    np.testing.assert_array_equal(actions, expected)
    assert model.observation_space == gym.make("CartPole-v1").observation_space


def test_a_crafted_attribute_is_refused_before_it_runs(saved_ppo: Path, tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    crafted = rewrite_attribute(saved_ppo, tmp_path / "crafted.zip", "observation_space", MakeDirectory(marker))
    with pytest.raises(CheckpointError, match=r"attribute 'observation_space' pickles posix\.mkdir.*could run code"):
        load_algorithm(PPO, crafted, acting_only=True)
    assert not marker.exists()
    with pytest.raises(Exception):  # noqa: B017 - the same file opened by SB3 alone runs the payload
        PPO.load(crafted)
    assert marker.exists()


def test_a_dtype_with_an_altered_state_is_refused(saved_ppo: Path, tmp_path: Path) -> None:
    crafted = rewrite_attribute(saved_ppo, tmp_path / "crafted.zip", "observation_space", ForgedObject())
    with pytest.raises(CheckpointError, match=r"numpy\.dtype object with an altered state"):
        load_algorithm(PPO, crafted, acting_only=True)


def test_a_schedule_pickled_as_code_gets_a_stand_in_to_act_but_stops_training(saved_ppo: Path) -> None:
    # the fixture's learning rate is a lambda, pickled by value as SB3 before 2.7 pickled every schedule
    expected, _ = PPO.load(saved_ppo).predict(observations(), deterministic=True)
    model = load_algorithm(PPO, saved_ppo, acting_only=True)
    np.testing.assert_array_equal(model.predict(observations(), deterministic=True)[0], expected)
    with pytest.raises(CheckpointError, match=r"attribute 'learning_rate' pickles cloudpickle.*save it again"):
        load_algorithm(PPO, saved_ppo)


def test_an_agent_with_class_schedules_resumes_training_from_its_file(tmp_path: Path) -> None:
    env = gym.make("CartPole-v1")
    model = PPO("MlpPolicy", env, n_steps=32, batch_size=32, n_epochs=1, seed=0, policy_kwargs={"net_arch": [8]})
    model.learn(64)
    model.save(tmp_path / "agent.zip")
    loaded = load_algorithm(PPO, tmp_path / "agent.zip", env=env)
    assert loaded.num_timesteps == 64
    assert loaded.lr_schedule(1.0) == pytest.approx(3e-4)
    loaded.learn(32, reset_num_timesteps=False)
    assert loaded.num_timesteps == 96


@pytest.mark.parametrize("algorithm", [DQN, SAC, TD3])
def test_off_policy_agents_and_their_buffers_round_trip_and_train_on(algorithm: type, tmp_path: Path) -> None:
    env = gym.make("CartPole-v1" if algorithm is DQN else "Pendulum-v1")
    noise = None if algorithm is DQN else NormalActionNoise(np.zeros(1), 0.1 * np.ones(1))
    kwargs = {} if algorithm is DQN else {"action_noise": noise}
    model = algorithm("MlpPolicy", env, learning_starts=16, buffer_size=200, seed=0, policy_kwargs={"net_arch": [8]},
                      **kwargs)
    model.learn(32)
    model.save(tmp_path / "agent.zip")
    model.save_replay_buffer(tmp_path / "buffer.pkl")
    expected = model.predict(observations()[:, : env.observation_space.shape[0]], deterministic=True)[0]

    loaded = load_algorithm(algorithm, tmp_path / "agent.zip", env=env)
    load_replay_buffer(loaded, tmp_path / "buffer.pkl")
    np.testing.assert_allclose(loaded.predict(observations()[:, : env.observation_space.shape[0]],
                                              deterministic=True)[0], expected)
    assert loaded.train_freq == model.train_freq and loaded.replay_buffer.pos == 32
    loaded.learn(16, reset_num_timesteps=False)
    assert loaded.num_timesteps == 48 and loaded.replay_buffer.pos == 48


def test_files_that_are_no_agent_are_named_with_the_fix(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match=r"no agent at .*missing\.zip"):
        load_algorithm(PPO, tmp_path / "missing.zip")
    (tmp_path / "text.zip").write_text("not a zip")
    with pytest.raises(CheckpointError, match=r"text\.zip is not a Stable-Baselines3 agent"):
        load_algorithm(PPO, tmp_path / "text.zip")


def test_a_replay_buffer_reloads_safely_and_a_crafted_one_is_refused(tmp_path: Path) -> None:
    env = gym.make("CartPole-v1")
    model = DQN("MlpPolicy", env, learning_starts=16, buffer_size=200, seed=0, policy_kwargs={"net_arch": [8]})
    model.learn(48)
    model.save_replay_buffer(tmp_path / "buffer.pkl")
    fresh = DQN("MlpPolicy", env, buffer_size=200, seed=1, policy_kwargs={"net_arch": [8]})
    load_replay_buffer(fresh, tmp_path / "buffer.pkl")
    assert fresh.replay_buffer.pos == model.replay_buffer.pos == 48
    np.testing.assert_array_equal(fresh.replay_buffer.observations, model.replay_buffer.observations)
    np.testing.assert_array_equal(fresh.replay_buffer.actions, model.replay_buffer.actions)

    marker = tmp_path / "ran"
    (tmp_path / "crafted.pkl").write_bytes(pickle.dumps(MakeDirectory(marker)))
    with pytest.raises(CheckpointError, match=r"the replay buffer pickles posix\.mkdir"):
        load_replay_buffer(fresh, tmp_path / "crafted.pkl")
    assert not marker.exists()
    (tmp_path / "array.pkl").write_bytes(pickle.dumps(np.zeros(3)))
    with pytest.raises(CheckpointError, match=r"holds a ndarray, not a replay buffer"):
        load_replay_buffer(fresh, tmp_path / "array.pkl")
