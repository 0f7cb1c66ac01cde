"""Sweeps beyond one process: launcher presets, shared datasets, distinct run directories."""

from __future__ import annotations

import importlib
import multiprocessing as mp
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from vaerl.data import FrameDataset, FrameDatasetWriter, ensure_dataset
from vaerl.envs import EnvConfig, make_env, preprocess_spec

PRETRAIN = [sys.executable, str(REPO / "scripts" / "pretrain_vae.py")]
TINY_FAKE = ["env=fake", "experiment=tiny", "progress=false", "train.num_threads=1",
             "data.frames=200", "weighting.background_frames=20"]
launchers = pytest.importorskip("hydra_plugins.vaerl_launchers.launchers")


@pytest.fixture(autouse=True)
def _no_site_slurm_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("VAERL_SLURM_PARTITION", raising=False)
    monkeypatch.delenv("VAERL_SLURM_TIMEOUT_MIN", raising=False)


def script_env(tmp_path: Path) -> dict[str, str]:
    return {**os.environ, "VAERL_RUNS": str(tmp_path / "runs"), "VAERL_DATA": str(tmp_path / "data"),
            "OMP_NUM_THREADS": "1", "HYDRA_FULL_ERROR": "0"}


def slurm_preset(*overrides: str) -> dict:
    """The SLURM preset's node as the launcher receives it (without the defaults from the environment)."""
    with initialize_config_dir(str(REPO / "configs"), version_base="1.3"):
        cfg = compose("pretrain", overrides=["hydra/launcher=slurm", *overrides], return_hydra_config=True)
    node = OmegaConf.to_container(cfg.hydra.launcher, resolve=True)
    node.pop("_target_")
    return node


# ---------------------------------------------------------------- launcher presets
def test_slurm_preset_without_partition_or_time_limit_submits_nothing(tmp_path: Path) -> None:
    result = subprocess.run([*PRETRAIN, "-m", *TINY_FAKE, "hydra/launcher=slurm"], env=script_env(tmp_path),
                            capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode != 0
    assert "hydra.launcher.partition=<partition>" in result.stderr
    assert "hydra.launcher.timeout_min=<minutes>" in result.stderr
    assert not (tmp_path / "runs").exists()  # failed before the sweep directory or any job


def test_slurm_preset_names_only_the_missing_setting() -> None:
    with pytest.raises(ValueError, match=r"timeout_min=<minutes>") as info:
        launchers.SlurmLauncher(**slurm_preset("hydra.launcher.partition=gpu"))
    assert "hydra.launcher.partition" not in str(info.value) and "VAERL_SLURM_PARTITION" not in str(info.value)
    with pytest.raises(ValueError, match="positive number of minutes"):
        launchers.SlurmLauncher(**slurm_preset("hydra.launcher.partition=gpu", "hydra.launcher.timeout_min=0"))


def test_slurm_preset_takes_its_site_defaults_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VAERL_SLURM_PARTITION", "gpu")
    monkeypatch.setenv("VAERL_SLURM_TIMEOUT_MIN", "720")
    params = slurm_preset()
    assert (params["partition"], params["timeout_min"]) == ("gpu", 720)
    assert slurm_preset("hydra.launcher.partition=debug")["partition"] == "debug"  # the command line wins


def test_slurm_preset_is_overridable_and_requeues() -> None:
    params = slurm_preset("hydra.launcher.partition=gpu", "hydra.launcher.timeout_min=240",
                          "hydra.launcher.gpus_per_node=2", "hydra.launcher.cpus_per_task=16",
                          "hydra.launcher.mem_gb=64")
    launcher = launchers.SlurmLauncher(**params)
    plugin = importlib.import_module("hydra_plugins.hydra_submitit_launcher.submitit_launcher")
    assert isinstance(launcher.inner, plugin.SlurmLauncher)
    assert {k: params[k] for k in ("partition", "timeout_min", "gpus_per_node", "cpus_per_task", "mem_gb")} == {
        "partition": "gpu", "timeout_min": 240, "gpus_per_node": 2, "cpus_per_task": 16, "mem_gb": 64}
    assert params["max_num_timeout"] > 0  # a job at its time limit is requeued, not lost
    # submitit requeues a preempted job through the launcher's checkpoint(): the same call, the same overrides
    delayed = launcher.inner.checkpoint(["seed=1"], "hydra.sweep.dir", 0, "job", {})
    assert delayed.args[0] == ["seed=1"]


def test_missing_plugin_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    real_import = importlib.import_module

    def without_plugins(name: str, *args, **kwargs):
        if name.startswith("hydra_plugins.hydra_"):
            raise ModuleNotFoundError(f"No module named {name!r}")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(importlib, "import_module", without_plugins)
    with pytest.raises(ImportError, match=r'hydra-joblib-launcher .* pip install -e "\.\[cluster\]"'):
        launchers.JoblibLauncher(n_jobs=2)
    with pytest.raises(ImportError, match=r'hydra-submitit-launcher .* pip install -e "\.\[cluster\]"'):
        launchers.SlurmLauncher(**slurm_preset("hydra.launcher.partition=gpu", "hydra.launcher.timeout_min=5"))


@pytest.mark.slow
def test_local_sweep_gives_each_run_its_directory_and_collects_once(tmp_path: Path) -> None:
    result = subprocess.run(
        [*PRETRAIN, "-m", *TINY_FAKE, "train.lr=1e-3,2e-3", "hydra/launcher=local", "hydra.launcher.n_jobs=2"],
        env=script_env(tmp_path), capture_output=True, text=True, timeout=300, check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    runs = sorted(p.parent.relative_to(tmp_path / "runs") for p in (tmp_path / "runs").rglob("metrics.json"))
    assert [p.parent.as_posix() for p in runs] == ["pretrain/fake/vae/seed0"] * 2  # env/model/seed, as a plain run
    assert ["train.lr=0.001" in p.name for p in runs] == [True, False]  # ... plus the other overrides of the sweep
    assert ["train.lr=0.002" in p.name for p in runs] == [False, True]
    datasets = [p for p in (tmp_path / "data").iterdir() if p.is_dir()]
    assert len(datasets) == 1  # both runs trained on the one dataset
    assert (result.stdout + result.stderr).count("collecting 200 frames") == 1


# ---------------------------------------------------------------- datasets shared between jobs
def _fake_config() -> EnvConfig:
    return EnvConfig(name="fake", id="vaerl/FakeFrames-v0", kind="gym",
                     kwargs={"size": (32, 32), "channels": 1, "max_steps": 40}, size=None)


def _ensure_in_process(root: str, calls: str, barrier, results) -> None:
    config = _fake_config()
    spec = preprocess_spec(config, make_env(config))

    def factory():
        with open(calls, "a") as log:  # one line per collection that really ran
            log.write(f"{os.getpid()}\n")
        time.sleep(1.0)  # long enough for the other process to arrive while this one collects
        return make_env(config, seed=0)

    barrier.wait()
    dataset = ensure_dataset(root, factory, spec, 120, key=config.to_dict(), seed=0, progress=False)
    results.put((str(dataset.path), len(dataset)))


def _publish_in_process(path: str, value: int, barrier) -> None:
    with FrameDatasetWriter(path, (1, 4, 4)) as writer:
        writer.add(np.full((5, 1, 4, 4), value, dtype=np.uint8), 0)
        writer.add(np.full((5, 1, 4, 4), value, dtype=np.uint8), 1)
        barrier.wait()  # both publish at the same moment
        writer.close()


def test_two_processes_asking_for_one_dataset_collect_it_once(tmp_path: Path) -> None:
    ctx = mp.get_context("spawn")
    barrier, results = ctx.Barrier(2), ctx.Queue()
    calls = tmp_path / "collections.txt"
    workers = [ctx.Process(target=_ensure_in_process, args=(str(tmp_path / "data"), str(calls), barrier, results))
               for _ in range(2)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=120)
    assert [w.exitcode for w in workers] == [0, 0]
    outcomes = {results.get(timeout=5) for _ in workers}
    assert len(outcomes) == 1 and next(iter(outcomes))[1] == 120  # both got the same complete dataset
    assert len(calls.read_text().split()) == 1
    assert not list((tmp_path / "data").glob("*.partial-*"))


def test_concurrent_publish_of_one_dataset_keeps_one_complete_copy(tmp_path: Path) -> None:
    ctx = mp.get_context("spawn")
    barrier = ctx.Barrier(2)
    path = tmp_path / "d"
    workers = [ctx.Process(target=_publish_in_process, args=(str(path), value, barrier)) for value in (1, 2)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=60)
    assert [w.exitcode for w in workers] == [0, 0]  # the second publisher drops its copy without an error
    dataset = FrameDataset(path)
    frames = dataset.frames(slice(None))
    assert len(dataset) == 10 and len(np.unique(frames)) == 1  # one writer's frames, never a mix
    assert not list(tmp_path.glob("*.partial-*"))
