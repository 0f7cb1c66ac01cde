"""Demonstrations as Minari datasets: round trip, training from one, atomic publish, bad datasets."""

from __future__ import annotations

import json
import os
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest

pytest.importorskip("minari")

from agents.bc.collect import CollectDemosConfig, collect_demos
from agents.bc.policy import BCPolicyConfig
from agents.bc.run import TrainBCConfig, run_train_bc
from agents.bc.train import TrainConfig
from vaerl.data.demos import load_minari, record_demos, save_minari
from vaerl.data.demos.minari import dataset_path
from vaerl.envs import EnvConfig
from vaerl.envs.obstacle import OBSTACLE_ENV_ID
from vaerl.errors import ConfigError, DatasetError


@pytest.fixture(autouse=True)
def minari_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "minari"
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(root))
    return root


@pytest.fixture(scope="module")
def demos():
    env = gym.make(OBSTACLE_ENV_ID, max_steps=30)
    return record_demos(env, env.unwrapped.scripted_expert(0), 4, seed=0, expert="scripted")


def test_round_trip_is_exact_and_minari_reads_it(demos) -> None:
    import minari

    path = save_minari(demos, "vaerl/obstacle-test-v0")
    assert path == dataset_path("vaerl/obstacle-test-v0") and (path / "data").is_dir()
    loaded = load_minari("vaerl/obstacle-test-v0")
    for name in ("observations", "final_observations", "actions", "rewards", "episode", "terminated"):
        np.testing.assert_array_equal(getattr(loaded, name), getattr(demos, name))
        assert getattr(loaded, name).dtype == getattr(demos, name).dtype
    assert {k: v.tolist() for k, v in loaded.episode_info.items()} == {
        k: v.tolist() for k, v in demos.episode_info.items()}
    assert loaded.metadata == demos.metadata
    # Minari itself sees the episodes and rebuilds the env they came from
    dataset = minari.load_dataset("vaerl/obstacle-test-v0")
    assert dataset.total_episodes == 4 and dataset.total_steps == demos.num_steps
    assert dataset.recover_environment().unwrapped.spec.id == OBSTACLE_ENV_ID
    assert "vaerl/obstacle-test-v0" in minari.list_local_datasets()


def test_collect_then_train_from_a_minari_dataset(tmp_path: Path, one_thread) -> None:
    env = EnvConfig(name="obstacle", id=OBSTACLE_ENV_ID, kind="gym", kwargs={"max_steps": 40})
    config = CollectDemosConfig(env=env, episodes=3, format="minari", dataset_id="vaerl/tiny-v0")
    assert collect_demos(config) == dataset_path("vaerl/tiny-v0")
    with pytest.raises(ConfigError, match="exists.*overwrite=true"):
        collect_demos(config)
    outputs = run_train_bc(TrainBCConfig(demos="minari:vaerl/tiny-v0", out=str(tmp_path / "run"), baseline=None,
                                         policy=BCPolicyConfig(hidden=[16]), eval_episodes=2, device="cpu",
                                         train=TrainConfig(steps=5, batch_size=16, log_every=5)))
    report = json.loads(outputs.eval_json.read_text())
    assert report["demo_episodes"] == 3 and report["policies"]["cvae"]["train"]["final"]["step"] == 5


def test_an_interrupted_write_leaves_nothing_and_its_leftovers_go(demos, minari_root: Path, monkeypatch) -> None:
    from minari.dataset.minari_storage import MinariStorage

    def fail(*args, **kwargs):
        raise KeyboardInterrupt

    with monkeypatch.context() as patch:
        patch.setattr(MinariStorage, "update_metadata", fail)
        with pytest.raises(KeyboardInterrupt):
            save_minari(demos, "vaerl/interrupted-v0")
    assert not dataset_path("vaerl/interrupted-v0").exists()
    assert not list((minari_root / "vaerl").glob("*partial*"))
    # a leftover of a writer that died (a pid that is not running) is removed by the next write
    dead = dataset_path("vaerl/interrupted-v0").with_name(f"interrupted-v0.partial-{os.uname().nodename}-999999999-ab")
    dead.mkdir(parents=True)
    save_minari(demos, "vaerl/interrupted-v0")
    assert not dead.exists() and load_minari("vaerl/interrupted-v0").num_episodes == 4


def test_bad_datasets_are_clear_errors_before_training(demos, tmp_path: Path) -> None:
    from minari.dataset.minari_storage import MinariStorage

    out = tmp_path / "out"
    with pytest.raises(DatasetError, match="no Minari dataset vaerl/absent-v0 is installed"):
        run_train_bc(TrainBCConfig(demos="minari:vaerl/absent-v0", out=str(out)))
    # an empty dataset
    import minari

    (dataset_path("vaerl/empty-v0") / "data").mkdir(parents=True)
    storage = MinariStorage.new(dataset_path("vaerl/empty-v0") / "data", observation_space=demos.observation_space,
                                action_space=demos.action_space)
    storage.update_metadata({"dataset_id": "vaerl/empty-v0", "minari_version": minari.__version__})
    with pytest.raises(DatasetError, match="holds no transitions"):
        run_train_bc(TrainBCConfig(demos="minari:vaerl/empty-v0", out=str(out)))
    # spaces that do not match the env it is evaluated in
    save_minari(demos, "vaerl/vector-v0")
    pixels = EnvConfig(name="p", id=OBSTACLE_ENV_ID, kind="gym", kwargs={"obs_type": "pixels", "image_size": 16})
    with pytest.raises(DatasetError, match="do not fit this env: the observation space is Box"):
        run_train_bc(TrainBCConfig(demos="minari:vaerl/vector-v0", env=pixels, out=str(out)))
    assert not out.exists()
