"""SB3 agents on latents and pixels: end-to-end runs, reload-and-play, resume, fine-tuning, bad inputs."""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import zipfile
from dataclasses import replace
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
import torch
from conftest import REPO, SUMS, TINY_VAE, TINY_VQVAE, sigterm_in_process
from gymnasium import spaces
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
from stable_baselines3 import PPO

import vaerl
from agents.rl import EncoderFeatures, EvalConfig, TrainAgentConfig, load_agent, play, train_agent
from agents.rl.builders import build_agent, model_kwargs
from agents.rl.callbacks import PeriodicEval, ProgressLog, ResumableCheckpoint, evaluate, save_model
from agents.rl.envs import load_run_encoder, make_run_env, run_observations
from agents.rl.evaluate import EvaluateAgentConfig, evaluate_agent
from agents.rl.features import (
    STANDARDIZE_FLOOR,
    CellConvFeatures,
    ProjectionConvFeatures,
    ProjectionKeypoints,
    StandardizedLatents,
    load_pretrained,
    projection_blur_matrix,
    shift_projections,
)
from agents.rl.frames import agent_frames, collect_agent_frames
from agents.rl.observations import (
    STANDARDIZE_STEPS,
    FinetuneObservations,
    LatentObservations,
    PixelObservations,
    RawObservations,
    random_play,
)
from agents.safe_load import load_algorithm, load_replay_buffer
from vaerl.checkpoint import load_model, save_checkpoint
from vaerl.cli import parse_config
from vaerl.config import from_dict
from vaerl.data import FrameDataset, ensure_dataset
from vaerl.envs import EnvConfig, make_env, preprocess_spec
from vaerl.errors import CheckpointError, ConfigError, DatasetError, ObservationError
from vaerl.evaluation.runs import file_digest
from vaerl.models import build_model
from vaerl.models.base import ProjectionLayout
from vaerl.stop import RunStopped
from vaerl.training import DataConfig, PretrainConfig, TrainConfig, WeightingConfig, pretrain
from vaerl.wrappers import LatentPipeline

FAKE = {"name": "fake", "id": "vaerl/FakeFrames-v0", "kind": "gym", "size": None,
        "kwargs": {"size": [40, 40], "max_steps": 30}}
QUICK = {  # a few seconds: 2 envs x 32 steps per PPO update
    "agent": {"name": "ppo", "algo": "ppo", "n_envs": 2,
              "hyperparams": {"n_steps": 32, "batch_size": 32, "n_epochs": 1, "learning_rate": "lin_2.5e-4"},
              "latent": {"policy": "MlpPolicy", "policy_kwargs": {"net_arch": [16]}}},
    "eval": {"every": 64, "episodes": 2, "final_episodes": 2, "n_envs": 2},
    "video": {"steps": 6, "scale": 1}, "total_steps": 128, "checkpoint_every": 64, "progress_bar": False,
    "threads": 1,  # two threads crawl when the CPU is shared with other jobs (tests stay fast anywhere)
}


def save_encoder(path: Path, env: dict, trained_on: dict | None = None, **model_changes) -> Path:
    """A random-init tiny VAE for the frames of ``env``, recorded as pretrained on ``trained_on`` (default ``env``)."""
    config = from_dict(EnvConfig, env)
    spec = preprocess_spec(config, make_env(config))
    model = build_model("vae", input_shape=spec.input_shape, **TINY_VAE, **model_changes)
    return save_checkpoint(path, model, spec, (trained_on or env) | {})


def config(tmp_path: Path, **changes) -> TrainAgentConfig:
    data = json.loads(json.dumps({**QUICK, "env": FAKE, "paths": {"runs": str(tmp_path / "runs")}}))
    for key, value in changes.items():
        target = data
        *parents, leaf = key.split(".")
        for parent in parents:
            target = target.setdefault(parent, {})
        target[leaf] = value
    return from_dict(TrainAgentConfig, data)


@pytest.fixture
def runs(tmp_path: Path) -> Path:
    """A runs/ folder holding the encoder scripts/pretrain_vae.py env=fake would have written."""
    save_encoder(tmp_path / "runs/pretrain/fake/vae/seed0/encoder.safetensors", FAKE)
    return tmp_path


@pytest.fixture
def sums_runs(tmp_path: Path) -> Path:
    """As ``runs``, with an encoder whose foreground is its row and column sums (for the options that read them)."""
    save_encoder(tmp_path / "runs/pretrain/fake/vae/seed0/encoder.safetensors", FAKE, **SUMS)
    return tmp_path


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("trained")
    save_encoder(tmp / "runs/pretrain/fake/vae/seed0/encoder.safetensors", FAKE)
    result = train_agent(config(tmp))
    assert result["total_steps"] == 128
    return config(tmp).output_dir


# ---------------------------------------------------------------------------------------- end to end
def test_latent_run_writes_every_output(trained: Path) -> None:
    assert trained.name == "seed0" and trained.parent.name == "ppo-latentTrue"
    result = json.loads((trained / "eval.json").read_text())
    assert result["episodes"] == 2 and len(result["returns"]) == 2 and result["latent"] is True
    assert result["mean_return"] == pytest.approx(np.mean(result["returns"]))
    assert result["std_return"] == pytest.approx(np.std(result["returns"]))
    history = json.loads((trained / "evaluations.json").read_text())
    assert [h["step"] for h in history] == [64, 128]
    for name in ("agent.zip", "encoder.safetensors", "config.json", "checkpoints/last.zip", "play.mp4"):
        assert (trained / name).is_file(), name
    assert list((trained / "tb").rglob("events.out.tfevents*"))
    frames = iio.imread(trained / "play.mp4")
    assert frames.shape[0] == 6 and frames.shape[1:3] == (40, 2 * 40 + 2)  # frame | reconstruction


def test_saved_agent_reloads_with_its_encoder_and_reproduces_its_evaluation(trained: Path) -> None:
    agent = load_agent(trained, device="cpu", n_envs=2)
    assert agent.encoder is not None and agent.encoder.info.env_id == "vaerl/FakeFrames-v0"
    assert agent.env.observation_space.shape == (4 * (4 + 14 * 14),)  # 4 stacked latents: 4-d z, 14 x 14 cells
    assert isinstance(agent.model.policy.features_extractor, CellConvFeatures)  # the default reading of cells
    cfg = agent.config
    again = evaluate(agent.model, agent.env, cfg.eval.final_episodes, cfg.seed + cfg.eval.seed_offset)
    assert again["returns"] == json.loads((trained / "eval.json").read_text())["returns"]
    returns = play(load_agent(trained, device="cpu"), episodes=1)
    assert len(returns) == 1 and returns[0] >= 0


def test_evaluating_a_run_again_replays_its_greedy_games_and_samples_reproducibly(
        trained: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    asked: list[bool] = []
    monkeypatch.setattr("agents.rl.evaluate.evaluate",
                        lambda *args: asked.append(args[-1]) or evaluate(*args))  # type: ignore[func-returns-value]
    greedy = evaluate_agent(EvaluateAgentConfig(run=str(trained), episodes=2, device="cpu"))
    assert greedy["returns"] == json.loads((trained / "eval.json").read_text())["returns"]
    assert json.loads((trained / "evaluation-greedy.json").read_text())["returns"] == greedy["returns"]
    sampled = [evaluate_agent(EvaluateAgentConfig(run=str(trained), episodes=3, deterministic=False, device="cpu",
                                                  out=str(tmp_path / f"sampled{i}.json"))) for i in range(2)]
    assert sampled[0]["deterministic"] is False and sampled[0]["episodes"] == 3
    assert sampled[0]["returns"] == sampled[1]["returns"]  # one seed sets the envs and the sampled actions
    assert asked == [True, False, False]
    assert not (trained / "evaluation-sampled.json").exists()


def test_atari_agents_are_evaluated_with_their_sampled_policy_unless_told_otherwise() -> None:
    atari, other = EnvConfig(), from_dict(EnvConfig, FAKE)
    assert atari.is_atari and not other.is_atari
    assert EvalConfig().is_deterministic(atari) is False  # as the RL Zoo: a greedy policy replays a few games
    assert EvalConfig().is_deterministic(other) is True
    assert EvalConfig(deterministic=True).is_deterministic(atari) is True
    assert EvalConfig(deterministic=False).is_deterministic(other) is False


def test_evaluating_a_run_again_refuses_a_folder_without_an_agent_or_no_games(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="holds no trained agent.*train_agent.py"):
        evaluate_agent(EvaluateAgentConfig(run=str(tmp_path)))
    with pytest.raises(ConfigError, match="episodes=0"):
        EvaluateAgentConfig(run=str(tmp_path), episodes=0)


# ------------------------------------------------------------------- pretraining frames of an agent's play
def agent_pretrain_config(trained: Path, tmp_path: Path, frames: int = 90, env: dict = FAKE) -> PretrainConfig:
    return PretrainConfig(
        env=from_dict(EnvConfig, env), model={"kind": "vae", **TINY_VAE},
        data=DataConfig(frames=frames, root=str(tmp_path / "data"), policy=str(trained)),
        train=TrainConfig(steps=2, batch_size=8, val_every=2, val_frames=16, checkpoint_every=2),
        weighting=WeightingConfig(background_frames=20), run_dir=str(tmp_path / "pretrain"), progress=False,
        device="cpu",
    )


def test_pretraining_on_an_agents_play_stores_its_frames_actions_and_whole_episodes(trained: Path,
                                                                                     tmp_path: Path) -> None:
    cfg = agent_pretrain_config(trained, tmp_path)
    metrics = pretrain(cfg, agent_frames(cfg))
    assert metrics["completed"]
    (folder,) = [p for p in (tmp_path / "data").iterdir() if p.is_dir()]
    dataset = FrameDataset(folder)
    assert len(dataset) == 90 and dataset.frame_shape == (1, 40, 40)
    assert sorted(dataset.extra_names) == ["action", "reward"]  # the agent's env has no RAM: that extra is dropped
    assert dataset.meta.info["policy"] == str(trained)
    assert dataset.meta.info["key"]["agent"] == file_digest(trained / "agent.zip")
    actions = dataset.extra("action")
    assert set(np.unique(actions)) <= set(range(make_env(from_dict(EnvConfig, FAKE)).action_space.n))
    # every episode is stored whole and in one piece, at most the fake env's 30 steps long
    episodes = dataset.episodes
    starts = np.flatnonzero(np.diff(episodes)) + 1
    assert len(set(episodes[np.r_[0, starts]])) == len(starts) + 1 and np.bincount(episodes).max() <= 30
    assert dataset.frames(slice(0, 90)).reshape(90, -1).max(axis=1).min() > 0  # frames, not blank placeholders


def test_agent_frames_are_the_frames_the_agent_sees_and_reproducible(trained: Path, tmp_path: Path) -> None:
    agent = load_agent(trained, device="cpu", n_envs=2, seed=5)
    spec = agent.encoder.spec
    first = collect_agent_frames(agent, spec, 40, tmp_path / "a", deterministic=True, progress=False)
    agent = load_agent(trained, device="cpu", n_envs=2, seed=5)
    seen = agent.observations.frame(agent.env, agent.env.reset(), 0)
    openings = first.frames(np.r_[0, np.flatnonzero(np.diff(first.episodes)) + 1])
    assert any(np.array_equal(frame, seen) for frame in openings)  # env 0's first frame opens a stored episode
    again = collect_agent_frames(load_agent(trained, device="cpu", n_envs=2, seed=5), spec, 40, tmp_path / "b",
                                 deterministic=True, progress=False)
    np.testing.assert_array_equal(first.frames(slice(0, 40)), again.frames(slice(0, 40)))
    np.testing.assert_array_equal(first.extra("action"), again.extra("action"))


def test_the_seed_an_agent_is_loaded_with_decides_its_games(trained: Path, tmp_path: Path) -> None:
    """Loading an SB3 agent seeds everything with the seed it trained with (0 here); the seed given to ``load_agent``
    must win, or every pretraining seed would collect the same frames of the agent's play."""
    def sampled_play(seed: int, name: str) -> np.ndarray:
        agent = load_agent(trained, device="cpu", n_envs=2, seed=seed)
        return collect_agent_frames(agent, agent.encoder.spec, 40, tmp_path / name, progress=False).frames(slice(0, 40))

    first = sampled_play(5, "a")
    np.testing.assert_array_equal(first, sampled_play(5, "b"))
    assert not np.array_equal(first, sampled_play(6, "c"))
    assert not np.array_equal(first, sampled_play(0, "d"))


def test_agent_frames_are_reused_and_collected_anew_for_another_agent(trained: Path, tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = agent_pretrain_config(trained, tmp_path)
    frames = agent_frames(cfg)
    spec = preprocess_spec(cfg.env, make_env(cfg.env))
    first = ensure_dataset(cfg.data.root, lambda: None, spec, 90, key={"policy": frames.key}, collector=frames.collect)
    calls = []
    again = ensure_dataset(cfg.data.root, lambda: None, spec, 90, key={"policy": frames.key},
                           collector=lambda path, spec: calls.append(path))
    assert again.path == first.path and not calls
    copy = tmp_path / "moved"
    shutil.copytree(trained, copy)
    moved = replace(cfg, data=replace(cfg.data, policy=str(copy)))
    assert agent_frames(moved).key == frames.key  # the same agent elsewhere plays the same frames
    (copy / "agent.zip").write_bytes((trained / "agent.zip").read_bytes() + b"retrained")
    assert agent_frames(moved).key["agent"] != frames.key["agent"]


def test_agent_frames_refuse_a_run_without_an_agent_another_game_or_missing_frames(trained: Path,
                                                                                    tmp_path: Path) -> None:
    cfg = agent_pretrain_config(trained, tmp_path)
    with pytest.raises(ConfigError, match="holds no agent.zip and config.json"):
        agent_frames(replace(cfg, data=replace(cfg.data, policy=str(tmp_path))))
    with pytest.raises(ConfigError, match="data.policy and policy_frames go together"):
        pretrain(cfg)  # data.policy set, but nothing to play it: the script passes agent_frames(cfg)
    with pytest.raises(ConfigError, match="data.policy and policy_frames go together"):
        pretrain(replace(cfg, data=replace(cfg.data, policy=None)), agent_frames(cfg))
    breakout = agent_pretrain_config(trained, tmp_path, env={"name": "Breakout", "id": "ALE/Breakout-v5"})
    with pytest.raises(ConfigError, match="plays vaerl/FakeFrames-v0, this run pretrains on ALE/Breakout-v5"):
        pretrain(breakout, agent_frames(breakout))
    with pytest.raises(DatasetError, match="leave data.num_envs at 1 with data.policy"):
        vector = replace(cfg, data=replace(cfg.data, num_envs=2))
        pretrain(vector, agent_frames(vector))
    small = agent_pretrain_config(trained, tmp_path, env={**FAKE, "size": [20, 20]})
    with pytest.raises(DatasetError, match=r"frames \(1, 40, 40\), the encoder to pretrain needs uint8 \(1, 20, 20\)"):
        pretrain(small, agent_frames(small))
    assert not any(p.is_dir() for p in (tmp_path / "data").iterdir())  # nothing half-written is left to reuse


def test_finished_run_is_not_overwritten(trained: Path) -> None:
    before = (trained / "eval.json").read_bytes()
    cfg = replace(config(trained.parents[4]), run_dir=str(trained))
    with pytest.raises(ConfigError, match="overwrite=true"):
        train_agent(cfg)
    assert (trained / "eval.json").read_bytes() == before


def test_finished_run_trains_further_when_asked_for_more_steps(runs: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = config(runs, **{"eval.every": 32, "video.steps": 0, "total_steps": 64})
    first = train_agent(cfg)
    assert first["total_steps"] == 64
    with pytest.raises(ConfigError, match=r"\(eval.json, 64 steps\); pass total_steps above 64"):
        train_agent(replace(cfg, resume=False, total_steps=128))
    step = PeriodicEval._on_step

    def interrupt(self):  # Ctrl-C part-way through the extension: a checkpoint is saved where it stopped
        if self.num_timesteps >= 160:
            raise KeyboardInterrupt
        return step(self)

    monkeypatch.setattr(PeriodicEval, "_on_step", interrupt)
    longer = replace(cfg, total_steps=256)
    with pytest.raises(KeyboardInterrupt):
        train_agent(longer)
    state = json.loads((cfg.output_dir / "checkpoints/last.json").read_text())
    assert state["num_timesteps"] == 128 and state["train_seconds"] >= first["train_seconds"]  # its rollout's start
    assert json.loads((cfg.output_dir / "eval.json").read_text())["total_steps"] == 64  # still the finished run's
    monkeypatch.setattr(PeriodicEval, "_on_step", step)
    result = train_agent(longer)  # the same command again: on from the extension's checkpoint, not from 64
    assert result["resumed_from"] == 128 and result["total_steps"] == 256
    assert json.loads((cfg.output_dir / "eval.json").read_text())["total_steps"] == result["total_steps"]
    steps = [h["step"] for h in json.loads((cfg.output_dir / "evaluations.json").read_text())]
    assert steps[:4] == [32, 64, 96, 128] and steps == sorted(set(steps)) and steps[-1] >= 256
    clock = [h["train_seconds"] for h in json.loads((cfg.output_dir / "evaluations.json").read_text())]
    assert clock == sorted(clock) and result["train_seconds"] >= clock[-1] > first["train_seconds"]
    assert load_agent(cfg.output_dir, device="cpu").model.num_timesteps == result["total_steps"]


def _last_schedules(run_dir: Path) -> tuple[float, float]:
    """The learning rate of a finished run's last update and its clip range at the end of its plan's share."""
    model = load_algorithm(PPO, run_dir / "agent.zip")
    return model.policy.optimizer.param_groups[0]["lr"], model.clip_range(0.0)


def test_schedule_steps_plans_the_schedules_for_a_longer_run(runs: Path) -> None:
    linear = {"eval.every": 0, "video.steps": 0, "agent.hyperparams.clip_range": "lin_0.1"}
    train_agent(config(runs, **linear, run_dir=str(runs / "own")))
    assert _last_schedules(runs / "own") == (pytest.approx(0.0), pytest.approx(0.0))  # planned for its 128 steps
    train_agent(config(runs, **linear, schedule_steps=512, run_dir=str(runs / "first-quarter")))
    assert _last_schedules(runs / "first-quarter") == (pytest.approx(2.5e-4 * 0.75), pytest.approx(0.1 * 0.75))
    assert json.loads((runs / "first-quarter/config.json").read_text())["schedule_steps"] == 512
    with pytest.raises(ConfigError, match=r"schedule_steps=64 is below total_steps=128.*schedule_steps >= total_steps"):
        config(runs, schedule_steps=64)


def test_a_run_trained_further_on_one_plan_goes_on_as_one_run_of_it(runs: Path) -> None:
    linear = {"eval.every": 0, "video.steps": 0, "agent.hyperparams.clip_range": "lin_0.1"}
    planned = config(runs, **linear, schedule_steps=256, total_steps=64)
    train_agent(planned)
    assert _last_schedules(planned.output_dir) == (pytest.approx(2.5e-4 * 0.75), pytest.approx(0.1 * 0.75))
    train_agent(replace(planned, total_steps=128))  # on along the 256-step plan, not back up to where 128 would be
    assert _last_schedules(planned.output_dir) == (pytest.approx(2.5e-4 * 0.5), pytest.approx(0.1 * 0.5))
    unplanned = config(runs, **linear, total_steps=64, run_dir=str(runs / "unplanned"))
    train_agent(unplanned)
    train_agent(replace(unplanned, total_steps=128))  # without a plan the extension decays to 0 at its new total
    assert _last_schedules(unplanned.output_dir) == (pytest.approx(0.0), pytest.approx(0.0))


def test_a_resumed_run_goes_on_evaluating_as_it_started_unless_told_otherwise(runs: Path) -> None:
    cfg = config(runs, **{"eval.every": 32, "video.steps": 0, "total_steps": 64, "eval.deterministic": False})
    train_agent(cfg)
    train_agent(replace(cfg, total_steps=128, eval=replace(cfg.eval, deterministic=None)))  # the default: not set
    history = json.loads((cfg.output_dir / "evaluations.json").read_text())
    assert [h["deterministic"] for h in history] == [False] * 4  # sampled throughout, though greedy is this env's default
    assert json.loads((cfg.output_dir / "config.json").read_text())["eval"]["deterministic"] is False
    result = train_agent(replace(cfg, total_steps=192, eval=replace(cfg.eval, deterministic=True)))  # said otherwise
    assert result["deterministic"] is True


def test_extension_starts_from_the_finished_agent(runs: Path, caplog: pytest.LogCaptureFixture) -> None:
    cfg = config(runs, **{"eval.every": 0, "video.steps": 0, "total_steps": 64, "checkpoint_every": 1000})
    train_agent(cfg)
    finished = load_agent(cfg.output_dir, device="cpu").model.policy.state_dict()
    loaded = []
    original = PPO.load

    def spy(path, *args, **kwargs):
        model = original(path, *args, **kwargs)
        loaded.append((Path(path).name, {k: v.clone() for k, v in model.policy.state_dict().items()}))
        return model

    with caplog.at_level(logging.WARNING, logger="agents"), pytest.MonkeyPatch.context() as patch:
        patch.setattr(PPO, "load", spy)
        result = train_agent(replace(cfg, total_steps=128))
    assert [name for name, _ in loaded[:1]] == ["agent.zip"]
    assert all(torch.equal(loaded[0][1][key], value) for key, value in finished.items())
    assert result["resumed_from"] == 64 and result["total_steps"] == 128
    assert any("restart from 50% of the way" in r.getMessage() for r in caplog.records)


def test_pixel_baseline_uses_natureccn_on_four_stacked_frames(tmp_path: Path) -> None:
    cfg = config(tmp_path, latent=False, **{"agent.pixel": {"policy": "CnnPolicy"}, "eval.every": 0, "video.steps": 0})
    result = train_agent(cfg)
    agent = load_agent(cfg.output_dir, device="cpu")
    assert agent.env.observation_space.shape == (4, 40, 40)
    assert type(agent.model.policy.features_extractor).__name__ == "NatureCNN"
    assert result["latent"] is False and cfg.output_dir.parent.name == "ppo-latentFalse"


def test_interrupted_run_resumes_from_its_checkpoint(runs: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = config(runs, **{"eval.every": 32})
    step = PeriodicEval._on_step

    def interrupt(self):  # Ctrl-C part-way through the second rollout (steps 64-128), after the evaluation at 96
        if self.num_timesteps >= 100:
            raise KeyboardInterrupt
        return step(self)

    monkeypatch.setattr(PeriodicEval, "_on_step", interrupt)
    with pytest.raises(KeyboardInterrupt):
        train_agent(cfg)
    state = json.loads((cfg.output_dir / "checkpoints/last.json").read_text())
    # the checkpoint counts only steps trained on: the first rollout's 64, after its one update
    assert state["num_timesteps"] == 64 and state["train_seconds"] > 0 and not (cfg.output_dir / "eval.json").exists()
    with zipfile.ZipFile(cfg.output_dir / "checkpoints/last.zip") as archive:
        saved = json.loads(archive.read("data"))
    assert saved["num_timesteps"] == 64 and saved["_n_updates"] == 1
    interrupted = [h["step"] for h in json.loads((cfg.output_dir / "evaluations.json").read_text())]
    assert interrupted == [32, 64, 96]
    monkeypatch.setattr(PeriodicEval, "_on_step", step)
    seeds = []
    real_env = make_run_env

    def recorded(cfg, observations, *, n_envs, seed, training):
        seeds.append((training, seed))
        return real_env(cfg, observations, n_envs=n_envs, seed=seed, training=training)

    monkeypatch.setattr("agents.rl.train.make_run_env", recorded)
    result = train_agent(cfg)
    # training plays on from new games (seed + steps done); evaluations keep their games
    assert seeds[:2] == [(True, cfg.seed + 64), (False, cfg.seed + cfg.eval.seed_offset)]
    history = json.loads((cfg.output_dir / "evaluations.json").read_text())
    steps = [h["step"] for h in history]
    assert result["resumed_from"] == 64 and result["total_steps"] == 128
    assert steps == [32, 64, 96, 128]  # the evaluation at 96 of the abandoned stretch made again, not kept twice
    # the clock goes on from the checkpoint's: training time summed over both processes, the pause left out
    clock = [h["train_seconds"] for h in history]
    assert clock == sorted(clock) and clock[-1] >= state["train_seconds"]
    assert result["train_seconds"] >= clock[-1]


@sigterm_in_process
def test_a_sigterm_stops_at_the_next_step_with_a_checkpoint_and_the_run_resumes(
    runs: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = config(runs, **{"eval.every": 32, "video.steps": 0, "checkpoint_every": 1000})  # no periodic checkpoint
    step = ResumableCheckpoint._on_step

    def terminated(self):  # `kill` or a batch system, in the second rollout (steps 64-128), as an evaluation falls due
        if self.num_timesteps == 96:
            signal.raise_signal(signal.SIGTERM)
        return step(self)

    monkeypatch.setattr(ResumableCheckpoint, "_on_step", terminated)
    with pytest.raises(RunStopped, match="SIGTERM: training stopped at step 64 of 128") as stop:
        train_agent(cfg)
    assert stop.value.exit_status == 143 and signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
    state = json.loads((cfg.output_dir / "checkpoints/last.json").read_text())
    assert state["num_timesteps"] == 64 and not (cfg.output_dir / "eval.json").exists()  # the rollout trained on
    evaluated = [h["step"] for h in json.loads((cfg.output_dir / "evaluations.json").read_text())]
    assert evaluated == [32, 64]  # the evaluation due at 96 did not hold up the stop
    monkeypatch.setattr(ResumableCheckpoint, "_on_step", step)
    result = train_agent(cfg)
    assert result["resumed_from"] == 64 and result["total_steps"] == 128


@sigterm_in_process
def test_a_sigterm_during_the_last_update_keeps_the_trained_rollout_and_skips_the_final_evaluation(
    runs: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = config(runs, **{"eval.every": 0, "video.steps": 0})  # 128 steps: two rollouts, two updates
    update = PPO.train

    def terminated(self):
        update(self)
        if self.num_timesteps == 128:
            signal.raise_signal(signal.SIGTERM)

    monkeypatch.setattr(PPO, "train", terminated)
    with pytest.raises(RunStopped, match="finished its 128 steps and stopped before its final evaluation"):
        train_agent(cfg)
    assert not (cfg.output_dir / "eval.json").exists()
    assert json.loads((cfg.output_dir / "agent.json").read_text())["num_timesteps"] == 128  # not rolled back to 64
    monkeypatch.setattr(PPO, "train", update)
    result = train_agent(cfg)  # the same command again only evaluates
    assert result["resumed_from"] == 128 and result["total_steps"] == 128


@sigterm_in_process
def test_an_off_policy_run_stopped_by_sigterm_counts_only_the_steps_in_its_buffer(
    runs: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    dqn = {"name": "dqn", "algo": "dqn", "n_envs": 1,
           "hyperparams": {"buffer_size": 500, "learning_starts": 16, "batch_size": 8, "train_freq": 4,
                           "target_update_interval": 32},
           "latent": {"policy": "MlpPolicy", "policy_kwargs": {"net_arch": [16]}}}
    cfg = config(runs, agent=dqn, **{"eval.every": 0, "video.steps": 0, "total_steps": 96, "checkpoint_every": 1000})
    step = ProgressLog._on_step

    def terminated(self):
        if self.num_timesteps == 50:
            signal.raise_signal(signal.SIGTERM)
        return step(self)

    monkeypatch.setattr(ProgressLog, "_on_step", terminated)
    with pytest.raises(RunStopped, match="stopped at step 49 of 96"):
        train_agent(cfg)
    state = json.loads((cfg.output_dir / "checkpoints/last.json").read_text())
    assert state["num_timesteps"] == 49
    monkeypatch.setattr(ProgressLog, "_on_step", step)
    sizes = []

    def spy(model, path):
        load_replay_buffer(model, path)
        sizes.append((model.num_timesteps, model.replay_buffer.size()))

    monkeypatch.setattr("agents.rl.train.load_replay_buffer", spy)
    result = train_agent(cfg)
    assert sizes == [(49, 49)] and result["resumed_from"] == 49 and result["total_steps"] >= 96  # (in rollouts of 4)


def test_a_run_killed_past_its_checkpoint_shows_each_step_once_in_tensorboard(
    runs: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    cfg = config(runs, **{"eval.every": 0, "video.steps": 0, "checkpoint_every": 128, "total_steps": 256})
    step = ProgressLog._on_step

    def killed(self):  # a kill (no checkpoint on the way out) in the fourth rollout, 72 steps past the checkpoint
        if self.num_timesteps >= 200:
            raise RuntimeError("killed")
        return step(self)

    monkeypatch.setattr(ProgressLog, "_on_step", killed)
    with pytest.raises(RuntimeError, match="killed"):
        train_agent(cfg)
    assert json.loads((cfg.output_dir / "checkpoints/last.json").read_text())["num_timesteps"] == 128
    monkeypatch.setattr(ProgressLog, "_on_step", step)
    time.sleep(1.1)  # event files are read in name order, and their names start with the second they were opened
    train_agent(cfg)
    folders = [p for p in (cfg.output_dir / "tb").iterdir() if p.is_dir()]
    assert [p.name for p in folders] == ["ppo_1"]
    events = EventAccumulator(str(folders[0]))
    events.Reload()
    # SB3 logs after each rollout: 64, 128 and 192 before the kill; 192 again and 256 after the resume from 128
    assert [e.step for e in events.Scalars("time/fps")] == [64, 128, 192, 256]


def test_a_run_stopped_in_its_final_evaluation_resumes_from_its_final_model(runs: Path) -> None:
    cfg = config(runs, **{"eval.every": 0, "video.steps": 0})  # 128 steps, checkpoints every 64

    def crash(*args, **kwargs):
        raise RuntimeError("the machine went away")

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("agents.rl.train.evaluate", crash)
        with pytest.raises(RuntimeError):
            train_agent(cfg)
    assert (cfg.output_dir / "agent.zip").exists() and not (cfg.output_dir / "eval.json").exists()
    trained = PPO.load(cfg.output_dir / "agent.zip", device="cpu").policy.state_dict()
    state = json.loads((cfg.output_dir / "agent.json").read_text())
    assert state["num_timesteps"] == 128
    # both rounded to 0.1 s: a tiny run's last rollout can take less than that
    assert state["train_seconds"] >= json.loads((cfg.output_dir / "checkpoints/last.json").read_text())["train_seconds"]
    result = train_agent(cfg)  # the same command: evaluates the trained model, does not train from a checkpoint
    assert result["resumed_from"] == 128 and result["total_steps"] == 128
    assert result["train_seconds"] == state["train_seconds"]  # all of it, not the checkpoint's
    final = load_agent(cfg.output_dir, device="cpu").model.policy.state_dict()
    assert all(torch.equal(trained[key], value) for key, value in final.items())


def test_an_extension_stopped_in_its_final_evaluation_keeps_its_training_seconds(runs: Path) -> None:
    cfg = config(runs, **{"eval.every": 0, "video.steps": 0, "total_steps": 64, "checkpoint_every": 1000})
    first = train_agent(cfg)
    longer = replace(cfg, total_steps=384)  # six times the first run's steps: seconds the checkpoint's clock would miss
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("agents.rl.train.evaluate", lambda *args, **kwargs: (_ for _ in ()).throw(RuntimeError("gone")))
        with pytest.raises(RuntimeError):
            train_agent(longer)
    state = json.loads((cfg.output_dir / "agent.json").read_text())
    assert state["num_timesteps"] == 384 and state["train_seconds"] > first["train_seconds"]
    result = train_agent(longer)  # eval.json still says 64 steps: an extension, from the 384-step agent.zip
    assert result["resumed_from"] == 384 and result["train_seconds"] == state["train_seconds"]


def test_an_off_policy_checkpoint_cut_short_resumes_with_its_own_buffer(runs: Path) -> None:
    """Killed after writing the next checkpoint's replay buffer but before its model: the resumed run reads the
    model of 32 steps with the buffer of 32 steps, never the newer one (whose transitions it would add twice)."""
    dqn = {"name": "dqn", "algo": "dqn", "n_envs": 1,
           "hyperparams": {"buffer_size": 500, "learning_starts": 16, "batch_size": 8, "train_freq": 4,
                           "target_update_interval": 32},
           "latent": {"policy": "MlpPolicy", "policy_kwargs": {"net_arch": [16]}}}
    cfg = config(runs, agent=dqn, **{"eval.every": 0, "video.steps": 0, "total_steps": 96, "checkpoint_every": 32})
    real = save_model

    def killed(model, path, train_seconds=None):
        if path.name == "last.zip" and model.num_timesteps >= 64:
            raise RuntimeError("killed")
        real(model, path, train_seconds)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("agents.rl.callbacks.save_model", killed)
        with pytest.raises(RuntimeError, match="killed"):
            train_agent(cfg)
    checkpoints = cfg.output_dir / "checkpoints"
    assert sorted(p.name for p in checkpoints.glob("replay_buffer_*.pkl")) == ["replay_buffer_32.pkl",
                                                                              "replay_buffer_64.pkl"]
    sizes = []

    def spy(model, path):
        load_replay_buffer(model, path)
        sizes.append((model.num_timesteps, model.replay_buffer.size()))

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("agents.rl.train.load_replay_buffer", spy)
        result = train_agent(cfg)
    assert sizes == [(32, 32)] and result["resumed_from"] == 32 and result["total_steps"] == 96
    assert [p.name for p in checkpoints.glob("replay_buffer_*.pkl")] == ["replay_buffer_64.pkl"]  # the rest removed


def test_without_a_terminal_training_prints_progress_lines(runs: Path, caplog: pytest.LogCaptureFixture,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = config(runs, **{"progress_bar": True, "eval.every": 0, "video.steps": 0, "total_steps": 64})
    monkeypatch.setattr(sys.stdout, "isatty", lambda: False)  # a batch job's log file
    with caplog.at_level(logging.INFO, logger="agents"):
        train_agent(cfg)
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("step ")]
    assert len(lines) == 1 and re.fullmatch(r"step 64/64  \d+ fps  return -?\d+\.\d\d \(last \d+ episodes\)",
                                            lines[0]), lines


def test_progress_lines_come_every_interval_with_the_recent_return(runs: Path,
                                                                   caplog: pytest.LogCaptureFixture) -> None:
    cfg = config(runs)
    observations = run_observations(cfg, torch.device("cpu"))
    env = make_run_env(cfg, observations, n_envs=2, seed=0, training=True)
    model = build_agent("ppo", cfg.agent.settings(True), env, policy="MlpPolicy", seed=0,
                        device=torch.device("cpu"), tensorboard_log=None)
    with caplog.at_level(logging.INFO, logger="agents"):
        model.learn(64, callback=ProgressLog(64, every_seconds=0.0))
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("step ")]
    assert [line.split()[1] for line in lines] == [f"{n}/64" for n in range(2, 65, 2)] + ["64/64"]
    assert lines[0].endswith("no finished episode yet")  # the fake env's episodes last 30 steps
    returns = [float(info["r"]) for info in model.ep_info_buffer]
    assert lines[-1].endswith(f"return {np.mean(returns):.2f} (last {len(returns)} episodes)")
    env.close()


# ---------------------------------------------------------------------------------------- observation pipelines
def test_each_run_gets_its_observation_pipeline(runs: Path) -> None:
    cpu = torch.device("cpu")
    cartpole = {"name": "CartPole", "id": "CartPole-v1", "kind": "gym", "size": None}
    cases = {
        LatentObservations: (config(runs), (4 * (4 + 14 * 14),), "MlpPolicy", 1),
        FinetuneObservations: (config(runs, **{"encoder.finetune": True}), (4, 40, 40), "MlpPolicy", 2),
        PixelObservations: (config(runs, latent=False), (4, 40, 40), "CnnPolicy", 2),
        RawObservations: (config(runs, latent=False, env=cartpole), (4,), "MlpPolicy", 1),
    }
    for kind, (cfg, shape, policy, threads) in cases.items():
        observations = run_observations(cfg, cpu)
        env = make_run_env(cfg, observations, n_envs=2, seed=0, training=True)
        assert type(observations) is kind and observations.threads == threads
        assert env.observation_space.shape == shape and env.reset().shape == (2, *shape)
        assert observations.policy({}, env.observation_space) == policy
        assert observations.filmed is (kind is not RawObservations)
        env.close()


def test_latent_video_shows_the_frame_and_the_latent_the_agent_sees(runs: Path) -> None:
    cfg = config(runs, **{"encoder.stack": 1})
    observations = run_observations(cfg, torch.device("cpu"))
    env = make_run_env(cfg, observations, n_envs=1, seed=0, training=False)
    obs = env.reset()
    for _ in range(3):
        obs, *_ = env.step(np.array([2]))
    frame, latent = env.newest(0)
    np.testing.assert_array_equal(latent, obs[0])
    encoder = observations.encoder
    np.testing.assert_allclose(encoder.encode_frames(frame[None]).numpy()[0], latent, atol=1e-6)
    shown, recon = observations.view(None, env, obs)
    expected = encoder.decode(torch.as_tensor(latent[None]))[0].numpy()
    assert shown.shape == recon.shape == (1, 40, 40) and shown.dtype == np.uint8
    np.testing.assert_allclose(recon, expected, atol=1e-6)
    env.close()


# ---------------------------------------------------------------------------------------- standardised latents
def test_standardized_latents_have_zero_mean_unit_scale_on_what_they_were_fitted_on() -> None:
    rng = np.random.default_rng(0)
    x = np.stack([rng.normal(3.0, 2.0, 500), rng.normal(-1.0, 0.01, 500), np.full(500, 7.0)], 1)
    extractor = StandardizedLatents(spaces.Box(-np.inf, np.inf, (3,), np.float32), floor=0.1, clip=5.0)
    extractor.fit(x)
    y = extractor(torch.as_tensor(x, dtype=torch.float32)).numpy()
    assert y[:, 0].mean() == pytest.approx(0, abs=1e-5) and y[:, 0].std(ddof=1) == pytest.approx(1, abs=1e-3)
    assert y[:, 1].std() < 0.2  # a number that hardly varies is divided by the floor, not blown up to unit scale
    np.testing.assert_allclose(y[:, 2], 0, atol=1e-6)
    unseen = extractor(torch.tensor([[3.0, -1.0, 8.0]])).numpy()[0]  # a constant that moves is clipped, not 10
    assert unseen[2] == pytest.approx(5.0)
    with pytest.raises(ValueError, match=r"\(N >= 2, 3\)"):
        extractor.fit(x[:1])


def test_standardized_run_fits_on_random_play_and_reloads_with_the_same_statistics(sums_runs: Path) -> None:
    cfg = config(sums_runs, **{"eval.every": 0, "video.steps": 0, "total_steps": 64})  # standardised by default
    train_agent(cfg)
    agent = load_agent(cfg.output_dir, device="cpu", n_envs=2)
    extractor = agent.model.policy.features_extractor
    assert isinstance(extractor, StandardizedLatents)
    # the statistics of the random play before training, which the reloaded agent carries
    observations = run_observations(cfg, torch.device("cpu"))
    env = make_run_env(cfg, observations, n_envs=2, seed=0, training=True)
    env.action_space.seed(0)
    play_obs = random_play(env, STANDARDIZE_STEPS)
    env.close()
    assert play_obs.shape == (2 * STANDARDIZE_STEPS, 4 * (4 + 40 + 40))
    assert not torch.equal(extractor.scale, torch.ones_like(extractor.scale))
    np.testing.assert_allclose(extractor.mean.numpy(), play_obs.mean(0), atol=1e-4)
    assert extractor.layout is None  # the foreground sums are standardised number by number by default


def test_standardized_projections_share_one_scale_per_axis_so_a_wall_column_keeps_the_ball() -> None:
    layout = {"start": 3, "channels": 1, "width": 40, "height": 40, "size": 83}
    space = spaces.Box(-np.inf, np.inf, (166,), np.float32)
    rng = np.random.default_rng(0)
    latents = np.zeros((400, 2, 83), np.float32)  # 2 stacked latents: 3 unordered numbers, 40 + 40 projections
    latents[..., :3] = rng.normal([5.0, 0.0, -2.0], [2.0, 0.5, 0.01], (400, 2, 3))
    latents[..., 3:] = rng.uniform(0.0, 1.0, (400, 2, 80))
    latents[..., 3 + 5] = 2.0  # column 5: a wall that random play never touched
    by_axis = StandardizedLatents(space, layout=layout)
    by_number = StandardizedLatents(space)
    for extractor in (by_axis, by_number):
        extractor.fit(latents.reshape(400, -1))
    scale = by_axis.scale.view(2, 83)
    pooled = np.sqrt(np.var(latents[..., 3:43], axis=0, ddof=1).mean())  # both stacked latents' columns
    np.testing.assert_allclose(scale[:, 3:43].numpy(), pooled, rtol=1e-4)
    np.testing.assert_allclose(scale[:, 43:].numpy(), np.sqrt(1 / 12), rtol=0.05)
    assert scale[0, 0].item() == pytest.approx(2.0, rel=0.1) and scale[0, 2].item() == pytest.approx(0.1)
    assert by_number.scale.view(2, 83)[0, 3 + 5].item() == pytest.approx(0.1)
    # late game: the wall's bricks are gone (its column sum up by 3), then the ball passes through it
    late = latents[:1].copy()
    late[:, -1, 3 + 5] += 3.0
    with_ball = late.copy()
    with_ball[:, -1, 3 + 5] += 0.5
    newest_wall = 83 + 3 + 5
    for extractor, sees_ball in ((by_axis, True), (by_number, False)):
        without, with_ = (extractor(torch.as_tensor(x.reshape(1, -1)))[0, newest_wall].item() for x in (late, with_ball))
        assert (with_ - without == pytest.approx(0.5 / pooled, rel=1e-3)) if sees_ball else with_ == without == 5.0
    # old agents load: the per-axis bookkeeping is not part of the saved state
    assert set(by_axis.state_dict()) == {"mean", "scale"}
    with pytest.raises(ValueError, match=r"observations of 160 numbers are not whole latents of 83"):
        StandardizedLatents(spaces.Box(-np.inf, np.inf, (160,), np.float32), layout=layout)


def test_projections_are_scaled_number_by_number_by_default_and_per_axis_on_request(sums_runs: Path) -> None:
    cpu = torch.device("cpu")
    per_axis = run_observations(config(sums_runs, **{"encoder.projection_scale": "axis"}), cpu).policy_kwargs()
    assert per_axis["features_extractor_kwargs"]["layout"]["width"] == 40
    default = run_observations(config(sums_runs), cpu).policy_kwargs()
    assert "layout" not in default["features_extractor_kwargs"]
    with pytest.raises(ConfigError, match=r"encoder.projection_scale must be one of \('axis', 'number'\), got 'place'"):
        config(sums_runs, **{"encoder.projection_scale": "place"})


def test_projection_blur_lets_neighbouring_ball_places_share_inputs_and_leaves_the_rest_alone() -> None:
    layout = {"start": 3, "channels": 1, "width": 40, "height": 30, "size": 73}
    blur = projection_blur_matrix(ProjectionLayout(**layout), sigma=2.0)
    assert blur.shape == (70, 70)
    np.testing.assert_allclose(blur.sum(1).numpy(), 1.0, rtol=1e-6)  # a blurred sum keeps its mass
    assert blur[5, 46].item() == 0.0 and blur[39, 40].item() == 0.0  # columns and rows never mix
    space = spaces.Box(-np.inf, np.inf, (146,), np.float32)
    rng = np.random.default_rng(0)
    latents = rng.normal(0.0, 1.0, (500, 2, 73)).astype(np.float32)
    sharp, blurred = StandardizedLatents(space), StandardizedLatents(space, layout=layout, projection_scale="number",
                                                                      projection_blur=2.0)
    for extractor in (sharp, blurred):
        extractor.fit(latents.reshape(500, -1))

    def ball_at(column: int, extractor: StandardizedLatents) -> torch.Tensor:
        frame = np.zeros((1, 2, 73), np.float32)
        frame[0, 1, 3 + column] = 1.0  # a ball in `column` of the newest latent
        features = extractor(torch.as_tensor(frame.reshape(1, -1)))[0]
        return features - extractor(torch.zeros(1, 146))[0]

    def overlap(a: torch.Tensor, b: torch.Tensor) -> float:
        return float(torch.nn.functional.cosine_similarity(a, b, dim=0))

    assert overlap(ball_at(20, sharp), ball_at(21, sharp)) == pytest.approx(0.0, abs=1e-6)
    assert overlap(ball_at(20, blurred), ball_at(21, blurred)) > 0.8
    assert overlap(ball_at(20, blurred), ball_at(30, blurred)) < 0.01  # far places stay apart
    # the unordered numbers (Gaussian means) are standardised as without blur
    np.testing.assert_allclose(blurred.scale.view(2, 73)[:, :3].numpy(), sharp.scale.view(2, 73)[:, :3].numpy())
    assert set(blurred.state_dict()) == {"mean", "scale"}  # the blur is rebuilt from its settings
    with pytest.raises(ValueError, match=r"projection_blur must be >= 0 and needs the latents' projection layout"):
        StandardizedLatents(space, projection_blur=2.0)


def test_projection_blur_is_set_up_from_the_config_and_reloads_with_the_agent(sums_runs: Path) -> None:
    cfg = config(sums_runs, **{"eval.every": 0, "video.steps": 0, "total_steps": 256, "encoder.projection_blur": 1.5})
    kwargs = run_observations(cfg, torch.device("cpu")).policy_kwargs()["features_extractor_kwargs"]
    assert kwargs["projection_blur"] == 1.5 and kwargs["projection_scale"] == "number"
    assert kwargs["layout"]["width"] == 40
    train_agent(cfg)
    reloaded = load_agent(cfg.output_dir, device="cpu", n_envs=2).model.policy.features_extractor
    assert isinstance(reloaded, StandardizedLatents) and reloaded.blur is not None
    assert reloaded.scale_group.max().item() == -1  # scaled number by number, as asked
    for changes, message in (({"encoder.projection_blur": -1.0}, r"encoder.projection_blur is a Gaussian's sigma"),
                             ({"encoder.projection_blur": 1.0, "encoder.projection_conv": True},
                              r"encoder.projection_blur=1.0 asks for another reading: choose one"),
                             ({"encoder.projection_blur": 1.0, "encoder.finetune": True},
                              r"set encoder.finetune=false and encoder.standardize=true, or encoder.projection_blur=0")):
        with pytest.raises(ConfigError, match=message):
            config(sums_runs, **changes)


def test_projection_keypoints_give_the_place_of_a_bump_as_a_number_and_learn() -> None:
    layout = ProjectionLayout(start=3, channels=1, width=40, height=30, size=73)
    keypoints = ProjectionKeypoints(layout, count=2, stack=2)
    rng = np.random.default_rng(0)
    keypoints.fit(torch.as_tensor(rng.normal(0.0, 2.0, (500, 146)), dtype=torch.float32))
    np.testing.assert_allclose(keypoints.scale.numpy(), 2.0, rtol=0.05)  # one spread per axis, all places pooled
    with torch.no_grad():  # filter 0 scores a place by its own value, sharply: the keypoint is the bump's place
        for conv in (keypoints.columns, keypoints.rows):
            conv.weight.zero_()
            conv.bias.zero_()
            conv.weight[0, 0, ProjectionKeypoints.kernel // 2] = 10.0

    def frame(column: int, row: int) -> torch.Tensor:
        latents = torch.zeros(1, 2, 73)
        latents[0, :, 3 + column] = latents[0, :, 3 + 40 + row] = 4.0  # one object in both stacked latents
        return latents.reshape(1, 146)

    points = keypoints(frame(column=10, row=25)).detach().view(2, 2, 2)  # (latent, axis, filter)
    np.testing.assert_allclose(points[:, 0, 0].numpy(), -1 + 2 * 10 / 39, atol=0.01)
    np.testing.assert_allclose(points[:, 1, 0].numpy(), -1 + 2 * 25 / 29, atol=0.01)
    np.testing.assert_allclose(points[:, :, 1].numpy(), 0.0, atol=1e-6)  # a blind filter: the mean place
    moved = keypoints(frame(column=30, row=25)).detach().view(2, 2, 2)
    assert moved[0, 0, 0] - points[0, 0, 0] == pytest.approx(2 * 20 / 39, abs=0.01)  # a move is a difference
    keypoints.zero_grad()
    keypoints(frame(column=10, row=25))[:, 1].sum().backward()  # a loss on a filter's place trains its filter
    assert keypoints.columns.weight.grad is not None and keypoints.columns.weight.grad[1].abs().sum() > 0
    with pytest.raises(ValueError, match=r"expects 2 latents of 73 numbers, got 73 numbers"):
        keypoints(torch.zeros(1, 73))
    space = spaces.Box(-np.inf, np.inf, (146,), np.float32)
    with pytest.raises(ValueError, match=r"projection_keypoints must be >= 0 and needs the latents' projection"):
        StandardizedLatents(space, projection_keypoints=2)
    extractor = StandardizedLatents(space, layout=layout._asdict(), projection_scale="number", projection_keypoints=2)
    assert extractor.features_dim == 146 + 2 * 2 * 2  # the standardised latents, then the keypoints


def test_projection_shift_moves_a_scene_alike_in_every_stacked_latent_and_only_while_learning() -> None:
    layout = ProjectionLayout(start=3, channels=1, width=40, height=30, size=73)
    latents = torch.zeros(200, 2, 73)
    latents[:, :, :3] = torch.arange(3.0)                        # unordered numbers: must not move
    latents[:, 0, 3 + 20] = latents[:, 0, 3 + 40 + 10] = 1.0     # an object at column 20, row 10 ...
    latents[:, 1, 3 + 22] = latents[:, 1, 3 + 40 + 11] = 1.0     # ... moving to column 22, row 11
    latents[:, :, 3 + 39] = 7.0                                  # something at the right edge
    moved = shift_projections(latents.reshape(200, -1), layout, most=3,
                              generator=torch.Generator().manual_seed(0)).view(200, 2, 73)
    torch.testing.assert_close(moved[:, :, :3], latents[:, :, :3])
    columns, rows = moved[:, :, 3: 43], moved[:, :, 43: 73]
    column_shift = 20 - (columns[:, 0] == 1.0).float().argmax(1)  # new place i shows old place i + shift
    row_shift = 10 - rows[:, 0].argmax(1)
    assert set(column_shift.tolist()) == set(range(-3, 4)) and set(row_shift.tolist()) == set(range(-3, 4))
    assert not torch.equal(column_shift, row_shift)               # the axes move independently
    torch.testing.assert_close(22 - (columns[:, 1] == 1.0).float().argmax(1), column_shift)  # motion is kept
    torch.testing.assert_close(11 - rows[:, 1].argmax(1), row_shift)
    # the right edge is repeated where the scene moved left, and never wraps round to the left
    torch.testing.assert_close((columns[:, 0] == 7.0).sum(1), (column_shift + 1).clamp(min=0))
    assert torch.all(columns[:, :, :30] != 7.0)
    space = spaces.Box(-np.inf, np.inf, (146,), np.float32)
    plain = StandardizedLatents(space, layout=layout._asdict(), projection_scale="number")
    shifting = StandardizedLatents(space, layout=layout._asdict(), projection_scale="number", projection_shift=3)
    observations = latents.reshape(200, -1)
    for extractor in (plain, shifting):
        extractor.fit(observations)
    shifting.train()
    assert not torch.equal(shifting(observations), plain(observations))
    shifting.eval()                                              # rollouts, evaluation and play
    torch.testing.assert_close(shifting(observations), plain(observations))
    with pytest.raises(ValueError, match=r"projection_shift must be >= 0 and needs the latents' projection layout"):
        StandardizedLatents(space, projection_shift=2)


def test_projection_shift_is_set_up_from_the_config(sums_runs: Path) -> None:
    cfg = config(sums_runs, **{"encoder.projection_shift": 2})
    kwargs = run_observations(cfg, torch.device("cpu")).policy_kwargs()["features_extractor_kwargs"]
    assert kwargs["projection_shift"] == 2 and kwargs["layout"]["width"] == 40
    for changes, message in (({"encoder.projection_shift": -1}, r"encoder.projection_shift is a number of places"),
                             ({"encoder.projection_shift": 2, "encoder.finetune": True},
                              r"encoder.finetune=false.*or encoder.projection_shift=0")):
        with pytest.raises(ConfigError, match=message):
            config(sums_runs, **changes)


def test_projection_keypoints_are_set_up_from_the_config_and_reload_with_the_agent(sums_runs: Path,
                                                                                   tmp_path: Path) -> None:
    cfg = config(sums_runs, **{"eval.every": 0, "video.steps": 0, "total_steps": 256, "encoder.projection_keypoints": 3,
                          "encoder.shared_layers": [16]})
    kwargs = run_observations(cfg, torch.device("cpu")).policy_kwargs()["features_extractor_kwargs"]
    assert kwargs["projection_keypoints"] == 3 and kwargs["projection_scale"] == "number"
    train_agent(cfg)
    agent = load_agent(cfg.output_dir, device="cpu", n_envs=2)
    reloaded = agent.model.policy.features_extractor
    assert isinstance(reloaded, StandardizedLatents) and isinstance(reloaded.keypoints, ProjectionKeypoints)
    assert reloaded.keypoints.count == 3 and reloaded.keypoints.stack == 4
    assert reloaded.shared[0].in_features == reloaded.mean.numel() + 4 * 2 * 3
    assert not torch.equal(reloaded.keypoints.scale, torch.ones_like(reloaded.keypoints.scale))  # fitted, carried
    for changes, message in (({"encoder.projection_keypoints": -1}, r"encoder.projection_keypoints is a count"),
                             ({"encoder.projection_keypoints": 2, "encoder.standardize": False},
                              r"encoder.standardize=true.*or encoder.projection_keypoints=0")):
        with pytest.raises(ConfigError, match=message):
            config(sums_runs, **changes)
    plain = tmp_path / "plain.safetensors"
    spec = preprocess_spec(from_dict(EnvConfig, FAKE), make_env(from_dict(EnvConfig, FAKE)))
    save_checkpoint(plain, build_model("vae", input_shape=spec.input_shape, foreground_projections=False,
                                       **TINY_VAE), spec, FAKE)
    with pytest.raises(ConfigError, match=r"encoder.projection_keypoints reads frame projections, but vae latents "
                                          r"are 4-d.*set encoder.projection_keypoints=0"):
        run_observations(config(sums_runs, **{"encoder.projection_keypoints": 2, "encoder.path": str(plain)}),
                         torch.device("cpu"))


def test_shared_layers_are_trained_by_policy_and_value_and_reload(runs: Path) -> None:
    cfg = config(runs, **{"eval.every": 0, "video.steps": 0, "total_steps": 256, "encoder.shared_layers": [32]})
    observations = run_observations(cfg, torch.device("cpu"))
    env = make_run_env(cfg, observations, n_envs=2, seed=0, training=True)
    settings = cfg.agent.settings(latent=True)
    model = build_agent("ppo", settings, env, policy="MlpPolicy", seed=0, device=torch.device("cpu"),
                        tensorboard_log=None, extra_policy_kwargs=observations.policy_kwargs())
    policy = model.policy
    assert isinstance(policy.features_extractor, StandardizedLatents) and policy.share_features_extractor
    assert policy.features_dim == 32 and policy.mlp_extractor.latent_dim_pi == policy.mlp_extractor.latent_dim_vf == 32
    assert policy.action_net.in_features == policy.value_net.in_features == 32  # linear heads on the shared layer
    layer = policy.features_extractor.shared[0]
    observation = torch.as_tensor(env.reset()[:1])
    for head in ("action", "value"):  # both losses reach the shared layer
        layer.weight.grad = None
        features = policy.extract_features(observation)
        out = policy.action_net(features) if head == "action" else policy.value_net(features)
        out.sum().backward()
        assert layer.weight.grad is not None and layer.weight.grad.abs().sum() > 0, head
    env.close()
    train_agent(cfg)
    agent = load_agent(cfg.output_dir, device="cpu", n_envs=2)
    reloaded = agent.model.policy.features_extractor
    assert isinstance(reloaded, StandardizedLatents) and reloaded.features_dim == 32
    assert not torch.equal(reloaded.scale, torch.ones_like(reloaded.scale))  # fitted, then carried by agent.zip
    for changes in ({"encoder.shared_layers": [0]}, {"encoder.shared_layers": [32], "encoder.standardize": False},
                    {"encoder.shared_layers": [32], "encoder.projection_conv": True}):
        with pytest.raises(ConfigError, match=r"encoder.shared_layers"):
            config(runs, **changes)


def test_latent_runs_standardise_by_default_and_fine_tuned_or_unstandardised_ones_do_not(runs: Path) -> None:
    cpu = torch.device("cpu")
    cases = {(): CellConvFeatures, (("encoder.cell_conv", False),): StandardizedLatents, (("encoder.standardize", False),): None,
             (("encoder.finetune", True),): EncoderFeatures}
    for changes, extractor in cases.items():
        observations = run_observations(config(runs, **dict(changes)), cpu)
        assert observations.policy_kwargs().get("features_extractor_class") is extractor


def test_standardize_floor_sets_the_least_spread_every_reading_divides_by(runs: Path) -> None:
    """A collapsed VAE dimension varies by 1e-4: at the default floor the policy sees it as a constant, at a
    smaller one at unit spread."""
    rng = np.random.default_rng(0)
    x = np.stack([rng.normal(3.0, 2.0, 500), rng.normal(-1.0, 1e-4, 500)], 1)
    space = spaces.Box(-np.inf, np.inf, (2,), np.float32)
    for floor, spread in ((STANDARDIZE_FLOOR, x[:, 1].std() / STANDARDIZE_FLOOR), (1e-6, 1.0)):
        extractor = StandardizedLatents(space, floor=floor)
        extractor.fit(x)
        y = extractor(torch.as_tensor(x, dtype=torch.float32)).numpy()
        assert y[:, 1].std() == pytest.approx(spread, rel=0.02)
    cpu = torch.device("cpu")
    for changes in ({}, {"encoder.cell_conv": False}):
        kwargs = run_observations(config(runs, **changes, **{"encoder.standardize_floor": 1e-6}), cpu).policy_kwargs()
        assert kwargs["features_extractor_kwargs"]["floor"] == 1e-6
        assert run_observations(config(runs, **changes), cpu).policy_kwargs()["features_extractor_kwargs"]["floor"] == STANDARDIZE_FLOOR
    with pytest.raises(ConfigError, match=r"encoder.standardize_floor .* > 0; got 0"):
        config(runs, **{"encoder.standardize_floor": 0})
    for other in ({"encoder.standardize": False}, {"encoder.finetune": True}):
        with pytest.raises(ConfigError, match=r"encoder.standardize_floor works on frozen latents"):
            config(runs, **other, **{"encoder.standardize_floor": 1e-3})


# ------------------------------------------------------------------- projections read by 1-D convolutions
def test_projection_layout_says_where_the_foreground_sums_lie_and_none_without_them() -> None:
    model = build_model("vae", input_shape=(1, 40, 48), **TINY_VAE, **SUMS)
    layout = model.projections()
    assert layout is not None and (layout.start, layout.channels, layout.width, layout.height) == (4, 1, 48, 40)
    assert layout.stop == 4 + 48 + 40 == layout.size == model.latent_dim("mean")
    x = torch.zeros(1, 1, 40, 48)
    x[0, 0, 10, 7] = 1.0  # one lit pixel against a black background: its column and its row, nothing else
    with torch.no_grad():
        latent = model.encode_latent(x)[0]
    np.testing.assert_array_equal(np.flatnonzero(latent[layout.start: layout.start + 48].numpy()), [7])
    np.testing.assert_array_equal(np.flatnonzero(latent[layout.start + 48: layout.stop].numpy()), [10])
    plain = build_model("vae", input_shape=(1, 40, 48), foreground_projections=False, **TINY_VAE)
    assert plain.projections() is None
    assert build_model("vae", input_shape=(1, 40, 48), **TINY_VAE).projections() is None  # the default: cells alone
    assert build_model("vqvae", input_shape=(1, 40, 48), **TINY_VQVAE).projections() is None


def projection_batch(rng: np.random.Generator, n: int, column: int) -> np.ndarray:
    """``n`` observations of 2 stacked latents (3 unordered numbers, 40 column and 40 row sums): a bump of
    height 2 at ``column`` in every column projection, noise elsewhere."""
    latents = np.zeros((n, 2, 3 + 40 + 40), np.float32)
    latents[..., :3] = rng.normal([5.0, 0.0, -2.0], [2.0, 0.5, 0.01], (n, 2, 3))
    latents[..., 3 + column] = 2.0
    latents[..., 43:] = rng.uniform(0.0, 1.0, (n, 2, 40))
    return latents.reshape(n, -1)


def test_projection_conv_scales_every_place_alike_and_standardises_the_rest() -> None:
    layout = {"start": 3, "channels": 1, "width": 40, "height": 40, "size": 83}
    extractor = ProjectionConvFeatures(spaces.Box(-np.inf, np.inf, (166,), np.float32), layout, stack=2)
    rng = np.random.default_rng(0)
    observations = projection_batch(rng, 400, column=5)
    extractor.fit(observations)
    columns = observations.reshape(400, 2, 83)[..., 3:43]
    # one scale per axis over all places: the bump column and the empty ones are divided by the same number
    assert extractor.projection_scale[0, 0].item() == pytest.approx(columns.std(ddof=1), rel=1e-4)
    assert extractor.projection_scale[1, 0].item() == pytest.approx(np.sqrt(1 / 12), rel=0.1)
    np.testing.assert_allclose(extractor.mean.numpy(), observations.reshape(400, 2, 83)[..., :3].reshape(400, 6).mean(0),
                               atol=1e-4)
    assert extractor.scale[2].item() == pytest.approx(0.1)  # a number that hardly varies is divided by the floor
    features = extractor(torch.as_tensor(observations))
    assert features.shape == (400, extractor.features_dim) == (400, 6 + 64 * 2)  # 40 -> 9 -> 3 -> 1 places
    # the unordered numbers come first, standardised; the bump moved by one stride of the first layer gives
    # the same first-layer response, shifted by one place
    assert features[:, 0].mean().item() == pytest.approx(0, abs=1e-4)
    first = extractor.columns[0]
    scale = extractor.projection_scale[0, 0]
    here = first(torch.as_tensor(projection_batch(rng, 1, 9)).view(1, 2, 83)[..., 3:43] / scale)
    there = first(torch.as_tensor(projection_batch(rng, 1, 13)).view(1, 2, 83)[..., 3:43] / scale)
    torch.testing.assert_close(here[..., 1], there[..., 2])
    features.sum().backward()
    assert first.weight.grad is not None and first.weight.grad.abs().sum() > 0


def test_projection_conv_rejects_what_it_cannot_read() -> None:
    layout = {"start": 3, "channels": 1, "width": 40, "height": 40, "size": 83}
    with pytest.raises(ValueError, match=r"expects 2 latents of 83 numbers"):
        ProjectionConvFeatures(spaces.Box(-np.inf, np.inf, (160,), np.float32), layout, stack=2)
    short = {"start": 3, "channels": 1, "width": 20, "height": 40, "size": 63}
    with pytest.raises(ValueError, match=r"20 columns and 40 rows are too short .*at least 36 each.*"
                                         r"encoder.projection_conv=false"):
        ProjectionConvFeatures(spaces.Box(-np.inf, np.inf, (126,), np.float32), short, stack=2)
    extractor = ProjectionConvFeatures(spaces.Box(-np.inf, np.inf, (166,), np.float32), layout, stack=2)
    with pytest.raises(ValueError, match=r"\(N >= 2, 166\)"):
        extractor.fit(np.zeros((1, 166)))


def test_projection_conv_run_fits_on_random_play_and_reloads_with_its_scales(sums_runs: Path) -> None:
    cfg = config(sums_runs, **{"eval.every": 0, "video.steps": 0, "total_steps": 64, "encoder.projection_conv": True})
    train_agent(cfg)
    agent = load_agent(cfg.output_dir, device="cpu", n_envs=2)
    extractor = agent.model.policy.features_extractor
    assert isinstance(extractor, ProjectionConvFeatures)
    assert extractor.layout.start == 4 and extractor.layout.width == extractor.layout.height == 40
    observations = run_observations(cfg, torch.device("cpu"))
    env = make_run_env(cfg, observations, n_envs=2, seed=0, training=True)
    env.action_space.seed(0)
    play_obs = random_play(env, STANDARDIZE_STEPS)
    env.close()
    columns = play_obs.reshape(len(play_obs), 4, 84)[..., 4:44]
    assert extractor.projection_scale[0, 0].item() == pytest.approx(max(columns.std(ddof=1), 0.1), rel=1e-3)


def test_projection_conv_needs_frozen_standardised_mean_latents_with_projections(sums_runs: Path,
                                                                                 tmp_path: Path) -> None:
    for changes, other in (({"encoder.finetune": True}, "finetune=True"),
                           ({"encoder.standardize": False}, "standardize=False"),
                           ({"encoder.mode": "sample"}, "mode=sample"),
                           ({"encoder.stack_mode": "delta"}, "stack_mode=delta"),
                           ({"encoder.projection_scale": "axis"}, "projection_scale=axis")):
        with pytest.raises(ConfigError, match=re.escape(f"encoder.{other} asks for another reading: choose one (set "
                                                        "encoder.projection_conv=false")):
            config(sums_runs, **{"encoder.projection_conv": True, **changes})
    plain = tmp_path / "plain.safetensors"
    spec = preprocess_spec(from_dict(EnvConfig, FAKE), make_env(from_dict(EnvConfig, FAKE)))
    save_checkpoint(plain, build_model("vae", input_shape=spec.input_shape, foreground_projections=False,
                                       **TINY_VAE), spec, FAKE)
    cfg = config(sums_runs, **{"encoder.projection_conv": True, "encoder.path": str(plain)})
    with pytest.raises(ConfigError, match=r"encoder.projection_conv reads frame projections, but vae latents are "
                                          r"4-d.*set encoder.projection_conv=false"):
        run_observations(cfg, torch.device("cpu"))
    cfg = config(sums_runs, **{"encoder.projection_blur": 2.0, "encoder.path": str(plain)})
    with pytest.raises(ConfigError, match=r"encoder.projection_blur reads frame projections, but vae latents are "
                                          r"4-d.*set encoder.projection_blur=0"):
        run_observations(cfg, torch.device("cpu"))
    cells_only = tmp_path / "cells.safetensors"
    save_checkpoint(cells_only, build_model("vae", input_shape=spec.input_shape, foreground_cells=4,
                                            foreground_sums=False, **TINY_VAE), spec, FAKE)
    cfg = config(sums_runs, **{"encoder.projection_conv": True, "encoder.path": str(cells_only)})
    with pytest.raises(ConfigError, match=r"vae latents are 4-d \+ 4x4 tent signed foreground cells.*model.foreground_sums=true"):
        run_observations(cfg, torch.device("cpu"))


# --------------------------------------------------------------------- cells read by 2-D convolutions
def test_cell_layout_says_where_the_cells_lie_and_none_without_them() -> None:
    model = build_model("vae", input_shape=(1, 40, 48), foreground_cells=4, foreground_sums=True,
                        foreground_cell_kernel="box", foreground_cells_signed=False, **TINY_VAE)
    cells = model.cells()
    assert cells is not None and (cells.start, cells.cells, cells.size) == (4 + 48 + 40, 4, 4 + 48 + 40 + 16)
    assert cells.stop == cells.size == model.latent_dim("mean")
    x = torch.zeros(1, 1, 40, 48)
    x[0, 0, 25, 7] = 1.0  # one lit pixel: row 25 of 40 and column 7 of 48 lie in cell (2, 0) of 4 x 4
    with torch.no_grad():
        grid = model.encode_latent(x)[0, cells.start: cells.stop].view(4, 4)
    np.testing.assert_array_equal(np.argwhere(grid.numpy()), [[2, 0]])
    assert build_model("vae", input_shape=(1, 40, 48), **TINY_VAE, **SUMS).cells() is None
    default = build_model("vae", input_shape=(1, 40, 48), **TINY_VAE).cells()
    assert (default.start, default.cells, default.size, default.signed) == (4, 14, 4 + 14 * 14, True)
    assert build_model("vqvae", input_shape=(1, 40, 48), **TINY_VQVAE).cells() is None


def cell_batch(rng: np.random.Generator, n: int, place: tuple[int, int]) -> np.ndarray:
    """``n`` observations of 2 stacked latents (3 unordered numbers, then 6 x 6 cells): a ball of mass 3 at
    ``place`` in every grid, a faint uniform haze elsewhere."""
    latents = np.zeros((n, 2, 3 + 36), np.float32)
    latents[..., :3] = rng.normal([5.0, 0.0, -2.0], [2.0, 0.5, 0.01], (n, 2, 3))
    grids = rng.uniform(0.0, 0.2, (n, 2, 6, 6)).astype(np.float32)
    grids[:, :, place[0], place[1]] = 3.0
    latents[..., 3:] = grids.reshape(n, 2, 36)
    return latents.reshape(n, -1)


def test_cell_conv_scales_every_cell_alike_and_standardises_the_rest() -> None:
    layout = {"start": 3, "cells": 6, "size": 39}
    extractor = CellConvFeatures(spaces.Box(-np.inf, np.inf, (78,), np.float32), layout, stack=2, features_dim=24)
    rng = np.random.default_rng(0)
    observations = cell_batch(rng, 400, place=(1, 2))
    extractor.fit(observations)
    grids = observations.reshape(400, 2, 39)[..., 3:]
    # one scale for every cell: the ball's cell and the empty ones are divided by the same number
    assert extractor.cell_scale.item() == pytest.approx(grids.std(ddof=1), rel=1e-4)
    np.testing.assert_allclose(extractor.mean.numpy(), observations.reshape(400, 2, 39)[..., :3].reshape(400, 6).mean(0),
                               atol=1e-4)
    assert extractor.scale[2].item() == pytest.approx(0.1)  # a number that hardly varies is divided by the floor
    features = extractor(torch.as_tensor(observations))
    assert features.shape == (400, 24) and (features >= 0).all()
    # the first convolution finds the ball alike wherever it is: moved by one cell, its response moves by one
    first = extractor.cnn[0]
    scale = extractor.cell_scale
    grid = np.zeros((1, 2, 39), np.float32)
    here, there = grid.copy(), grid.copy()
    here[..., 3 + 2 * 6 + 2] = 3.0   # cell (2, 2)
    there[..., 3 + 3 * 6 + 3] = 3.0  # cell (3, 3)
    respond = [first(torch.as_tensor(g)[..., 3:].view(1, 2, 6, 6) / scale) for g in (here, there)]
    torch.testing.assert_close(respond[0][..., 1:4, 1:4], respond[1][..., 2:5, 2:5])
    features.sum().backward()
    assert first.weight.grad is not None and first.weight.grad.abs().sum() > 0
    with pytest.raises(ValueError, match=r"expects 2 latents of 39 numbers"):
        CellConvFeatures(spaces.Box(-np.inf, np.inf, (70,), np.float32), layout, stack=2)
    with pytest.raises(ValueError, match=r"\(N >= 2, 78\)"):
        extractor.fit(np.zeros((1, 78)))


def test_cell_conv_clips_distance_cells_but_not_signed_ones() -> None:
    """Signed cells are bounded by construction; a clip would hide a ball in front of a hole that alone fills
    it. Distance cells keep the bound."""
    space = spaces.Box(-np.inf, np.inf, (2 * 25,), np.float32)
    hole = np.zeros((1, 2 * 25), np.float32)
    hole[0, [12, 25 + 12]] = -50.0  # a cell of knocked-out bricks: 50 scales below the background, in both frames
    ball = hole.copy()
    ball[0, [12, 25 + 12]] += 2.0  # the ball in front of it
    for signed in (False, True):
        extractor = CellConvFeatures(space, {"start": 0, "cells": 5, "size": 25, "signed": signed}, stack=2)
        seen = extractor(torch.as_tensor(ball)) - extractor(torch.as_tensor(hole))
        assert (seen.abs().sum() > 0) == signed  # clipped at 20, the ball changes nothing


def test_standardised_latents_scale_signed_cells_as_one_picture_unclipped() -> None:
    layout = {"start": 3, "cells": 6, "size": 39, "signed": True}
    space = spaces.Box(-np.inf, np.inf, (78,), np.float32)
    extractor = StandardizedLatents(space, cells=layout)
    observations = cell_batch(np.random.default_rng(0), 400, place=(1, 2))
    latents = observations.reshape(400, 2, 39)
    latents[..., 3:] *= 10.0  # a haze that varies more than the floor
    extractor.fit(observations)
    grids = latents[..., 3:]
    scale = extractor.scale.view(2, 39)
    pooled = np.sqrt(grids.reshape(400, -1).var(0, ddof=1).mean())
    np.testing.assert_allclose(scale[:, 3:].numpy(), pooled, rtol=1e-4)  # every cell of every frame alike
    np.testing.assert_allclose(scale[:, :2].numpy(), latents[..., :2].std(0, ddof=1), rtol=1e-4)  # the rest alone
    hole = np.zeros((1, 78), np.float32)
    hole[0, 3 + 14] = hole[0, 39 + 3 + 14] = -100.0  # far beyond anything random play showed
    standardized = extractor(torch.as_tensor(hole)).view(2, 39)
    torch.testing.assert_close(standardized[:, 3 + 14], (-100.0 - extractor.mean.view(2, 39)[:, 3 + 14]) / scale[:, 3 + 14])
    assert standardized[:, 2].abs().max() <= extractor.clip  # numbers outside the cells keep their clip
    with pytest.raises(ValueError, match="pools the scale of signed cells only"):
        StandardizedLatents(space, cells={**layout, "signed": False})


def test_cell_conv_reads_a_grid_with_nothing_beside_it() -> None:
    extractor = CellConvFeatures(spaces.Box(-np.inf, np.inf, (2 * 25,), np.float32),
                                 {"start": 0, "cells": 5, "size": 25}, stack=2, features_dim=8)
    observations = np.random.default_rng(1).uniform(0, 1, (50, 50)).astype(np.float32)
    extractor.fit(observations)
    assert extractor.mean.numel() == 0
    assert extractor(torch.as_tensor(observations)).shape == (50, 8)


def test_cell_conv_widths_set_its_layers_and_join() -> None:
    space = spaces.Box(-np.inf, np.inf, (2 * 39,), np.float32)
    layout = {"start": 3, "cells": 6, "size": 39}
    small = CellConvFeatures(space, layout, stack=2, widths=(4, 8, 16), features_dim=16)
    convs = [layer for layer in small.cnn if isinstance(layer, torch.nn.Conv2d)]
    assert [(conv.in_channels, conv.out_channels, conv.stride[0]) for conv in convs] == [(2, 4, 1), (4, 8, 2), (8, 16, 2)]
    # 6 x 6 cells -> 6 -> 3 -> 2 places a side; the 3 unordered numbers of both latents join them
    assert small.join[0].in_features == 16 * 2 * 2 + 2 * 3 and small.features_dim == 16
    assert small(torch.zeros(5, 2 * 39)).shape == (5, 16)
    for widths, features_dim in (((), 16), ((4, 0), 16), ((4,), 0)):
        with pytest.raises(ValueError, match="positive filter counts and features_dim"):
            CellConvFeatures(space, layout, stack=2, widths=widths, features_dim=features_dim)


def test_cell_conv_motion_reads_what_moved_at_its_own_size_and_nothing_that_stands_still() -> None:
    """A hole in the wall 50 scales deep, the ball (2 scales) moving in front of it: stacked grids hold the move
    as a small difference of large numbers, the motion channels hold the move alone."""
    space = spaces.Box(-np.inf, np.inf, (3 * 25,), np.float32)
    layout = {"start": 0, "cells": 5, "size": 25, "signed": True}
    extractor = CellConvFeatures(space, layout, stack=3, widths=(4,), features_dim=8, motion=True)
    assert extractor.cnn[0].in_channels == 3 + 2
    grids = np.zeros((1, 3, 5, 5), np.float32)
    grids[:, :, 1, :] = -50.0          # a row of holes, in every frame
    grids[0, 0, 1, 1] += 2.0           # the ball in front of it, moving right one cell per frame
    grids[0, 1, 1, 2] += 2.0
    grids[0, 2, 1, 3] += 2.0
    seen = {}
    extractor.cnn[0].register_forward_hook(lambda module, inputs, output: seen.update(input=inputs[0]))
    extractor(torch.as_tensor(grids.reshape(1, -1)))
    motion = seen["input"][0, 3:]
    expected = np.zeros((2, 5, 5), np.float32)
    expected[0, 1, 1], expected[0, 1, 2] = -2.0, 2.0
    expected[1, 1, 2], expected[1, 1, 3] = -2.0, 2.0
    torch.testing.assert_close(motion, torch.as_tensor(expected))  # the holes cancel, the ball is all there is
    torch.testing.assert_close(seen["input"][0, :3], torch.as_tensor(grids[0]))  # the grids as they were
    still = np.repeat(grids[:, :1], 3, axis=1)
    extractor(torch.as_tensor(still.reshape(1, -1)))
    assert seen["input"][0, 3:].abs().max() == 0
    extractor.cell_scale.fill_(2.0)  # the changes are scaled as the grids are
    extractor(torch.as_tensor(grids.reshape(1, -1)))
    torch.testing.assert_close(seen["input"][0, 3:], torch.as_tensor(expected) / 2)
    # distance cells are clipped at cell_clip, their changes taken before: a saturated cell still shows the ball
    distance = CellConvFeatures(space, {**layout, "signed": False}, stack=3, widths=(4,), features_dim=8, motion=True)
    distance.cnn[0].register_forward_hook(lambda module, inputs, output: seen.update(input=inputs[0]))
    distance(torch.as_tensor(np.abs(grids).reshape(1, -1)))
    assert seen["input"][0, :3].abs().max() == distance.cell_clip
    assert seen["input"][0, 3, 1, 1] == pytest.approx(2.0) and seen["input"][0, 3, 1, 2] == pytest.approx(-2.0)
    with pytest.raises(ValueError, match="needs a stack of 2 or more latents, got stack=1"):
        CellConvFeatures(spaces.Box(-np.inf, np.inf, (25,), np.float32), layout, stack=1, motion=True)


def test_cell_conv_motion_is_an_option_of_the_cell_reading(runs: Path, tmp_path: Path) -> None:
    trained = config(runs, **{"eval.every": 0, "video.steps": 0, "total_steps": 64, "encoder.cell_conv": True,
                              "encoder.path": str(cells_encoder(tmp_path, foreground_sums=False)),
                              "encoder.cell_conv_motion": True})
    train_agent(trained)
    extractor = load_agent(trained.output_dir, device="cpu", n_envs=1).model.policy.features_extractor
    assert extractor.motion and extractor.cnn[0].in_channels == 4 + 3  # reloaded as it was trained
    sums = config(runs, **{"encoder.cell_conv_motion": True,
                           "encoder.path": str(save_encoder(tmp_path / "sums.safetensors", FAKE, **SUMS))})
    with pytest.raises(ConfigError, match=r"encoder.cell_conv_motion reads a grid of foreground cells, but vae latents "
                                          r"are .*: set encoder.cell_conv_motion=false, or pretrain with"):
        run_observations(sums, torch.device("cpu"))
    for changes, message in (({"encoder.cell_conv": False, "encoder.cell_conv_motion": True},
                              "encoder.cell_conv_motion, encoder.cell_conv_spread and encoder.cell_conv_asinh shape the cell"),
                             ({"encoder.cell_conv_motion": True, "encoder.shared_layers": [32]},
                              "encoder.shared_layers=[32] asks for another reading: leave encoder.shared_layers at its"),
                             ({"encoder.cell_conv_motion": True, "encoder.finetune": True},
                              "encoder.finetune=True asks for another reading"),
                             ({"encoder.cell_conv_motion": True, "encoder.stack": 1},
                              "set encoder.stack to 2 or more (got 1), or encoder.cell_conv_motion=false")):
        with pytest.raises(ConfigError, match=re.escape(message)):
            config(runs, **changes)


def cells_encoder(tmp_path: Path, **changes) -> Path:
    path = tmp_path / "cells.safetensors"
    spec = preprocess_spec(from_dict(EnvConfig, FAKE), make_env(from_dict(EnvConfig, FAKE)))
    box_cells_beside_sums = {"foreground_cells": 5, "foreground_sums": True, "foreground_cell_kernel": "box",
                             "foreground_cells_signed": False}
    model = build_model("vae", input_shape=spec.input_shape, **{**box_cells_beside_sums, **changes, **TINY_VAE})
    return save_checkpoint(path, model, spec, FAKE)


CELL_LAYOUT = {"start": 3, "cells": 6, "size": 39}
CELL_SPACE = spaces.Box(-np.inf, np.inf, (78,), np.float32)


def fitted_cell_convs(*options: dict) -> tuple[list[CellConvFeatures], list[torch.Tensor]]:
    """A :class:`CellConvFeatures` with each of ``options``, all fitted on the same play of a 6 x 6 grid (2 stacked),
    and what the first convolution of each reads on that play."""
    observations = torch.as_tensor(cell_batch(np.random.default_rng(0), 400, place=(1, 2)))
    extractors, seen = [], []
    for kwargs in options:
        extractor = CellConvFeatures(CELL_SPACE, CELL_LAYOUT, stack=2, **kwargs)
        extractor.fit(observations)
        extractor.cnn[0].register_forward_hook(lambda module, inputs, output: seen.append(inputs[0]))
        extractor(observations)
        extractors.append(extractor)
    return extractors, seen


def test_cell_conv_spread_sets_the_size_the_convolutions_read_cells_at() -> None:
    """Fitted on the same play, spread 0.1 divides every cell by ten times the number spread 1 does, the rest alike."""
    (standardised, small), (unit, tenth) = fitted_cell_convs({"spread": 1.0}, {"spread": 0.1})
    assert unit.std().item() == pytest.approx(1.0, rel=1e-3)  # standardised: unit spread over the play
    torch.testing.assert_close(tenth, unit / 10)
    torch.testing.assert_close(small.scale, standardised.scale)  # the numbers beside the cells do not change
    for spread in (0.0, -1.0):
        with pytest.raises(ValueError, match=r"the cells' spread as the convolutions read them, > 0; got"):
            CellConvFeatures(CELL_SPACE, CELL_LAYOUT, stack=2, spread=spread)


def test_cell_conv_spread_is_an_option_of_the_cell_reading(runs: Path, tmp_path: Path) -> None:
    trained = config(runs, **{"eval.every": 0, "video.steps": 0, "total_steps": 64,
                              "encoder.path": str(cells_encoder(tmp_path, foreground_sums=False)),
                              "encoder.cell_conv_spread": 0.1})
    train_agent(trained)
    extractor = load_agent(trained.output_dir, device="cpu", n_envs=1).model.policy.features_extractor
    assert isinstance(extractor, CellConvFeatures) and extractor.spread == 0.1  # reloaded as it was trained
    for changes, message in (({"encoder.cell_conv_spread": 0},
                              "encoder.cell_conv_spread is the cells' spread as the convolutions read them, > 0; got 0"),
                             ({"encoder.cell_conv": False, "encoder.cell_conv_spread": 0.1},
                              "encoder.cell_conv_spread and encoder.cell_conv_asinh shape the cell convolutions"),
                             ({"encoder.cell_conv_spread": 0.1, "encoder.shared_layers": [32]},
                              "asks for another reading: leave encoder.shared_layers at its default, or set encoder.cell_conv_spread=1.0")):
        with pytest.raises(ConfigError, match=re.escape(message)):
            config(runs, **changes)


def test_cell_conv_asinh_reads_small_cells_as_they_are_and_large_ones_on_a_log_scale() -> None:
    """The same fit, through asinh: a cell of 0.1 stays about 0.1, one of 20 (a hole in the wall) reads about 3.7,
    so a ball's cell of 3.5 goes from a sixth of the hole's size to half of it."""
    (linear, squashed), (sums, read) = fitted_cell_convs({"asinh": False}, {"asinh": True})
    torch.testing.assert_close(squashed.cell_scale, linear.cell_scale)  # the same scale, read otherwise
    torch.testing.assert_close(read, torch.asinh(sums))


def test_cell_conv_asinh_is_an_option_of_the_cell_reading(runs: Path, tmp_path: Path) -> None:
    trained = config(runs, **{"eval.every": 0, "video.steps": 0, "total_steps": 64,
                              "encoder.path": str(cells_encoder(tmp_path, foreground_sums=False)),
                              "encoder.cell_conv_asinh": True})
    train_agent(trained)
    extractor = load_agent(trained.output_dir, device="cpu", n_envs=1).model.policy.features_extractor
    assert isinstance(extractor, CellConvFeatures) and extractor.asinh  # reloaded as it was trained
    for changes, message in (({"encoder.cell_conv": False, "encoder.cell_conv_asinh": True},
                              "encoder.cell_conv_asinh shape the cell convolutions: set encoder.cell_conv=auto"),
                             ({"encoder.cell_conv_asinh": True, "encoder.standardize": False},
                              ("asks for another reading: leave encoder.standardize at its default, or set "
                               "encoder.cell_conv_asinh=false"))):
        with pytest.raises(ConfigError, match=re.escape(message)):
            config(runs, **changes)


def test_cell_conv_run_fits_on_random_play_and_reloads_with_linear_heads(runs: Path, tmp_path: Path) -> None:
    path = cells_encoder(tmp_path, foreground_sums=False)
    cfg = config(runs, **{"eval.every": 0, "video.steps": 0, "total_steps": 64, "encoder.cell_conv": True,
                          "encoder.path": str(path)})
    train_agent(cfg)
    agent = load_agent(cfg.output_dir, device="cpu", n_envs=2)
    policy = agent.model.policy
    extractor = policy.features_extractor
    assert isinstance(extractor, CellConvFeatures)
    assert (extractor.layout.start, extractor.layout.cells) == (4, 5)
    assert policy.action_net.in_features == policy.value_net.in_features == 256  # linear heads on shared features
    observations = run_observations(cfg, torch.device("cpu"))
    env = make_run_env(cfg, observations, n_envs=2, seed=0, training=True)
    env.action_space.seed(0)
    play_obs = random_play(env, STANDARDIZE_STEPS)
    env.close()
    grids = play_obs.reshape(len(play_obs), 4, 29)[..., 4:]
    assert extractor.cell_scale.item() == pytest.approx(max(grids.std(ddof=1), 0.1), rel=1e-3)


def test_cell_conv_needs_frozen_standardised_mean_latents_with_cells(runs: Path, tmp_path: Path) -> None:
    for changes, other in (({"encoder.finetune": True}, "finetune=True"),
                           ({"encoder.standardize": False}, "standardize=False"),
                           ({"encoder.mode": "sample"}, "mode=sample"),
                           ({"encoder.stack_mode": "delta"}, "stack_mode=delta"),
                           ({"encoder.projection_conv": True}, "projection_conv=True"),
                           ({"encoder.projection_scale": "axis"}, "projection_scale=axis"),
                           ({"encoder.projection_blur": 1.0}, "projection_blur=1.0"),
                           ({"encoder.shared_layers": [32]}, "shared_layers=[32]")):
        with pytest.raises(ConfigError, match=re.escape(f"encoder.{other} asks for another reading: choose one")):
            config(runs, **{"encoder.cell_conv": True, **changes})
    sums = save_encoder(tmp_path / "sums.safetensors", FAKE, **SUMS)
    cfg = config(runs, **{"encoder.cell_conv": True, "encoder.path": str(sums)})  # sums, no cells
    with pytest.raises(ConfigError, match=r"encoder.cell_conv reads a grid of foreground cells, but vae latents are "
                                          r"4-d \+ 1x\(40\+40\) foreground projections.*model.foreground_cells=14"):
        run_observations(cfg, torch.device("cpu"))
    with_sums = config(runs, **{"encoder.cell_conv": True, "encoder.path": str(cells_encoder(tmp_path))})
    kwargs = run_observations(with_sums, torch.device("cpu")).policy_kwargs()
    assert kwargs["features_extractor_class"] is CellConvFeatures
    assert kwargs["features_extractor_kwargs"]["layout"] == {"start": 4 + 80, "cells": 5, "size": 4 + 80 + 25,
                                                           "signed": False}
    assert (kwargs["features_extractor_kwargs"]["widths"], kwargs["features_extractor_kwargs"]["features_dim"]) == \
        ([16, 32], 256)
    smaller = config(runs, **{"encoder.cell_conv": True, "encoder.path": str(cells_encoder(tmp_path)),
                              "encoder.cell_conv_widths": [8], "encoder.cell_conv_features": 64})
    kwargs = run_observations(smaller, torch.device("cpu")).policy_kwargs()["features_extractor_kwargs"]
    assert (kwargs["widths"], kwargs["features_dim"]) == ([8], 64)
    for changes, message in (({"encoder.cell_conv": False, "encoder.cell_conv_widths": [8]},
                              "set encoder.cell_conv=auto or true, or leave them"),
                             ({"encoder.cell_conv": "yes"}, "encoder.cell_conv must be auto, true or false, got 'yes'"),
                             ({"encoder.cell_conv": True, "encoder.cell_conv_widths": [8, 0]},
                              "encoder.cell_conv_widths must be one or more positive filter counts"),
                             ({"encoder.cell_conv": True, "encoder.cell_conv_features": 0}, "a positive width")):
        with pytest.raises(ConfigError, match=re.escape(message)):
            config(runs, **changes)


def test_cell_conv_auto_reads_cells_unless_another_reading_is_asked_for(runs: Path, tmp_path: Path) -> None:
    cells = str(cells_encoder(tmp_path, foreground_sums=False))

    def extractor(**changes) -> type:
        cfg = config(runs, **{"encoder.path": cells, **changes})
        return run_observations(cfg, torch.device("cpu")).policy_kwargs().get("features_extractor_class")

    assert config(runs).encoder.cell_conv == "auto"
    assert extractor() is CellConvFeatures
    assert extractor(**{"encoder.cell_conv": False}) is StandardizedLatents
    # options of another reading take the cells to the MLP instead of raising
    assert extractor(**{"encoder.shared_layers": [32]}) is StandardizedLatents
    assert extractor(**{"encoder.standardize": False}) is None
    assert config(runs, **{"encoder.mode": "sample"}).encoder.other_reading() == "mode=sample"
    # latents without cells are read by the MLP, with no error; the default encoder's cells by cell conv
    sums = str(save_encoder(tmp_path / "sums.safetensors", FAKE, **SUMS))
    assert extractor(**{"encoder.path": sums}) is StandardizedLatents
    default = run_observations(config(runs), torch.device("cpu")).policy_kwargs()
    assert default["features_extractor_class"] is CellConvFeatures


def test_mlp_reading_pools_signed_cells_only(runs: Path, tmp_path: Path) -> None:
    for signed in (False, True):
        path = cells_encoder(tmp_path / str(signed), foreground_cells_signed=signed)
        cfg = config(runs, **{"encoder.path": str(path), "encoder.cell_conv": False})
        kwargs = run_observations(cfg, torch.device("cpu")).policy_kwargs()
        assert kwargs["features_extractor_class"] is StandardizedLatents
        cells = kwargs["features_extractor_kwargs"].get("cells")
        assert cells == ({"start": 4 + 80, "cells": 5, "size": 4 + 80 + 25, "signed": True} if signed else None)


# ---------------------------------------------------------------------------------------- fine-tuning
def test_features_extractor_starts_from_the_checkpoint_and_matches_the_frozen_wrapper(runs: Path) -> None:
    ckpt = runs / "runs/pretrain/fake/vae/seed0/encoder.safetensors"
    info = load_model(ckpt)[1]
    extractor = EncoderFeatures(spaces.Box(0, 255, (3, 40, 40), np.uint8), "vae", info.model_config, stack=3)
    extractor.load_checkpoint(ckpt)
    encoder = vaerl.load_encoder(ckpt, "cpu")
    pipeline = LatentPipeline(encoder, 1, stack=3)
    env = make_env(from_dict(EnvConfig, FAKE))
    obs, _ = env.reset(seed=0)
    pipeline.step(obs[None], np.array([True]))
    frames = [encoder.preprocess(obs[None])]
    for action in (2, 2):
        obs, *_ = env.step(action)
        expected = pipeline.step(obs[None], np.array([False]))[0]
        frames.append(encoder.preprocess(obs[None]))
    stacked = torch.as_tensor(np.concatenate(frames, axis=1)).float() / 255.0
    np.testing.assert_allclose(extractor(stacked).detach().numpy(), expected, atol=1e-5)


@pytest.mark.parametrize("trainable", [True, False])
def test_features_extractor_is_finetuned_or_stays_frozen(runs: Path, trainable: bool) -> None:
    ckpt = runs / "runs/pretrain/fake/vae/seed0/encoder.safetensors"
    cfg = config(runs, **{"encoder.finetune": True})
    observations = FinetuneObservations(vaerl.load_encoder(ckpt, "cpu"), stack=4)
    env = make_run_env(cfg, observations, n_envs=2, seed=0, training=True)
    assert env.observation_space.shape == (4, 40, 40)  # 4 frames for 4 stacked latents
    kwargs = observations.policy_kwargs()
    kwargs["features_extractor_kwargs"]["trainable"] = trainable
    settings = cfg.agent.settings(True) | {"learning_rate": 1e-3}  # (a linear schedule is 0 at the end of learn(64))
    model = build_agent("ppo", settings, env, policy="MlpPolicy", seed=0,
                        device=torch.device("cpu"), tensorboard_log=None, extra_policy_kwargs=kwargs)
    assert load_pretrained(model.policy, ckpt) == 1
    pretrained = load_model(ckpt)[0].state_dict()
    extractor = model.policy.features_extractor.model
    assert all(torch.equal(pretrained[k], v) for k, v in extractor.state_dict().items())
    model.learn(64)
    changed = any(not torch.equal(pretrained[k], v) for k, v in extractor.state_dict().items())
    assert changed is trainable


def test_finetuned_run_reloads_with_its_trained_encoder(runs: Path) -> None:
    # a constant learning rate: a linear schedule is 0 at the end of learn(64), and the encoder would not move
    cfg = config(runs, **{"encoder.finetune": True, "eval.every": 0, "total_steps": 64,
                          "agent.hyperparams.learning_rate": 1e-3})
    assert train_agent(cfg)["finetune"] is True
    agent = load_agent(cfg.output_dir, device="cpu")
    assert isinstance(agent.model.policy.features_extractor, EncoderFeatures)
    assert (cfg.output_dir / "play.mp4").is_file()
    # the reloaded encoder is the fine-tuned one, not the pretrained checkpoint loaded again
    pretrained = load_model(runs / "runs/pretrain/fake/vae/seed0/encoder.safetensors")[0].state_dict()
    reloaded = agent.model.policy.features_extractor.model.state_dict()
    assert any(not torch.equal(pretrained[k], v) for k, v in reloaded.items())


# ---------------------------------------------------------------------------------------- bad input
def test_missing_encoder_names_the_command_that_makes_one(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match=r"python scripts/pretrain_vae.py env=fake model=vae seed=0"):
        train_agent(config(tmp_path))
    assert not (tmp_path / "runs" / "agent").exists()


def test_an_encoder_of_unfinished_pretraining_is_used_with_a_warning(runs: Path, caplog: pytest.LogCaptureFixture) -> None:
    run_dir = runs / "runs/pretrain/fake/vae/seed0"
    with caplog.at_level(logging.WARNING, logger="agents"):
        load_run_encoder(config(runs), "cpu")
        assert not caplog.records  # a finished run (here: no train state at all) is used quietly
        (run_dir / "train_state.pt").write_bytes(b"")  # interrupted: a train state and no metrics.json
        load_run_encoder(config(runs), "cpu")
        assert any("has not finished" in r.getMessage() for r in caplog.records)
        caplog.clear()
        (run_dir / "metrics.json").write_text("{}")  # finished
        load_run_encoder(config(runs), "cpu")
        assert not caplog.records


def test_encoder_of_another_env_or_preprocessing_is_refused(tmp_path: Path) -> None:
    pong = save_encoder(tmp_path / "pong.safetensors", FAKE, trained_on={**FAKE, "id": "ALE/Pong-v5"})
    with pytest.raises(CheckpointError, match="ALE/Pong-v5"):
        train_agent(config(tmp_path, **{"encoder.path": str(pong)}))
    resized = save_encoder(tmp_path / "resized.safetensors", FAKE, trained_on={**FAKE, "size": [32, 32]})
    with pytest.raises(CheckpointError, match=r"env.size=None here, \[32, 32\] in pretraining"):
        train_agent(config(tmp_path, **{"encoder.path": str(resized)}))
    small = save_encoder(tmp_path / "small.safetensors", {**FAKE, "kwargs": {"size": [36, 36]}}, trained_on=FAKE)
    with pytest.raises(ObservationError, match=r"source_shape.*\(40, 40, 1\)"):
        train_agent(config(tmp_path, **{"encoder.path": str(small)}))
    assert not (tmp_path / "runs" / "agent").exists()


def test_algorithm_that_cannot_handle_the_action_space(runs: Path) -> None:
    with pytest.raises(ConfigError, match=r"SAC needs a continuous .*Discrete\(3\).*agent=ppo"):
        train_agent(config(runs, **{"agent.algo": "sac", "agent.name": "sac"}))
    assert not (runs / "runs" / "agent").exists()


def test_latent_run_on_an_env_without_images(runs: Path) -> None:
    cartpole = {"name": "CartPole", "id": "CartPole-v1", "kind": "gym", "size": None}
    with pytest.raises(ConfigError, match="needs image observations"):
        train_agent(config(runs, env=cartpole))
    assert not (runs / "runs" / "agent").exists()


# ---------------------------------------------------------------------------------------- configs and the script
def test_encoder_is_looked_up_under_vaerl_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VAERL_RUNS", str(tmp_path / "elsewhere"))
    with initialize_config_dir(str(REPO / "configs"), version_base="1.3"):
        cfg = compose("train_agent", overrides=[f"run_dir={tmp_path}/run"])
    parsed = parse_config(TrainAgentConfig, OmegaConf.to_container(cfg, resolve=True))
    assert parsed.pretrained_encoder_path() == tmp_path / "elsewhere/pretrain/Breakout/vae/seed0/encoder.safetensors"


def test_a_list_of_encoder_seeds_takes_the_run_whose_gaussian_part_carries_the_most(tmp_path: Path) -> None:
    def pretrain_run(seed: int, val: dict[str, float] | None) -> Path:
        run_dir = tmp_path / "pretrain" / "Breakout" / "vae" / f"seed{seed}"
        run_dir.mkdir(parents=True)
        (run_dir / "train_state.pt").write_bytes(b"")
        if val is not None:
            (run_dir / "metrics.json").write_text(json.dumps({"completed": True, "val": val}))
        return run_dir

    for seed, kl in ((0, 9.4), (1, 4.4), (2, 9.6), (6, 9.6)):
        pretrain_run(seed, {"kl": kl, "loss": 1600.0})

    def lookup(seeds: str) -> Path:
        with initialize_config_dir(str(REPO / "configs"), version_base="1.3"):
            cfg = compose("train_agent", overrides=[f"paths.runs={tmp_path}", f"encoder.seed={seeds}",
                                                    f"run_dir={tmp_path}/run"])
        return parse_config(TrainAgentConfig, OmegaConf.to_container(cfg, resolve=True)).pretrained_encoder_path()

    assert lookup("[1,2,0]") == tmp_path / "pretrain/Breakout/vae/seed2/encoder.safetensors"
    with initialize_config_dir(str(REPO / "configs"), version_base="1.3"):
        cfg = compose("train_agent", overrides=[f"paths.runs={tmp_path}", "encoder.seed=[1,2,0]", f"run_dir={tmp_path}/r"])
    chosen = parse_config(TrainAgentConfig, OmegaConf.to_container(cfg, resolve=True)).with_encoder_chosen().encoder
    assert (chosen.seed, chosen.path) == (2, str(tmp_path / "pretrain/Breakout/vae/seed2/encoder.safetensors"))
    assert lookup("[0,1]") == tmp_path / "pretrain/Breakout/vae/seed0/encoder.safetensors"
    assert lookup("[6,2]") == tmp_path / "pretrain/Breakout/vae/seed6/encoder.safetensors"  # a tie: the first listed
    assert lookup("[2,6]") == tmp_path / "pretrain/Breakout/vae/seed2/encoder.safetensors"
    assert lookup("1") == tmp_path / "pretrain/Breakout/vae/seed1/encoder.safetensors"  # one seed: no choice
    pretrain_run(3, None)  # interrupted: no metrics.json yet
    with pytest.raises(ConfigError, match=r"seed3 has not finished: run `python scripts/pretrain_vae.py` with that run's env, model and seed .* or leave its seed out"):
        lookup("[0,3]")
    with pytest.raises(ConfigError, match=r"seed4 does not exist"):
        lookup("[0,4]")
    pretrain_run(5, {"loss": 10.0})  # a VQ-VAE run: no KL
    with pytest.raises(ConfigError, match="reports no validation KL"):
        lookup("[0,5]")


@pytest.mark.parametrize("agent", ["ppo", "a2c", "dqn", "sac", "td3"])
def test_every_agent_config_composes_into_sb3_arguments(agent: str, tmp_path: Path) -> None:
    with initialize_config_dir(str(REPO / "configs"), version_base="1.3"):
        cfg = compose("train_agent", overrides=[f"agent={agent}", f"run_dir={tmp_path}"])
    parsed = parse_config(TrainAgentConfig, OmegaConf.to_container(cfg, resolve=True))
    box = spaces.Box(-1, 1, (2,), np.float32)
    for latent in (True, False):
        kwargs = model_kwargs(parsed.agent.settings(latent), box)
        assert "policy" not in kwargs and not any(isinstance(v, str) and v.startswith("lin_") for v in kwargs.values())
    assert parsed.env.id == "ALE/Breakout-v5" and parsed.latent is True


def test_a_latent_only_override_leaves_pixel_runs_on_the_shared_settings(tmp_path: Path) -> None:
    with initialize_config_dir(str(REPO / "configs"), version_base="1.3"):
        cfg = compose("train_agent", overrides=["+agent.latent.learning_rate=lin_5e-4", f"run_dir={tmp_path}"])
    parsed = parse_config(TrainAgentConfig, OmegaConf.to_container(cfg, resolve=True))
    actions = spaces.Discrete(4)
    latent, pixel = (model_kwargs(parsed.agent.settings(flag), actions)["learning_rate"] for flag in (True, False))
    assert latent(1.0) == pytest.approx(5e-4) and latent(0.5) == pytest.approx(2.5e-4)  # still a linear schedule
    assert pixel(1.0) == pytest.approx(2.5e-4)  # the RL Zoo's, shared by both in agent.hyperparams
    assert parsed.agent.settings(True)["clip_range"] == parsed.agent.settings(False)["clip_range"] == "lin_0.1"


def run_script(tmp_path: Path, *overrides: str, quick: bool = True) -> subprocess.CompletedProcess:
    env = {**os.environ, "VAERL_RUNS": str(tmp_path / "runs"), "PYTHONUNBUFFERED": "1"}
    settings = ["agent.n_envs=2", "agent.hyperparams.n_steps=32", "agent.hyperparams.batch_size=32",
                "agent.hyperparams.n_epochs=1", "total_steps=64", "eval.every=0", "eval.final_episodes=1",
                "eval.n_envs=1", "video.steps=4", "checkpoint_every=32", "threads=1"]
    settings = settings if quick else []
    return subprocess.run([sys.executable, str(REPO / "scripts/train_agent.py"), *settings, *overrides],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300, check=False)


@pytest.mark.slow
@pytest.mark.parametrize("latent", ["true", "false"])
def test_script_on_the_fake_env(tmp_path: Path, latent: str) -> None:
    ckpt = save_encoder(tmp_path / "enc.safetensors", {**FAKE, "kwargs": {"size": [84, 84], "channels": 1,
                                                                            "max_steps": 100}})
    done = run_script(tmp_path, "env=fake", f"latent={latent}", f"encoder={ckpt}", "env.kwargs.max_steps=30")
    assert done.returncode == 0, done.stderr[-2000:]
    run = tmp_path / f"runs/agent/fake/ppo-latent{latent.capitalize()}/seed0"
    assert json.loads((run / "eval.json").read_text())["latent"] is (latent == "true")
    assert re.search(r"step 64/64  \d+ fps  return", done.stdout), done.stdout[-2000:]  # stdout is a pipe here


@pytest.mark.slow
@pytest.mark.atari
@pytest.mark.parametrize("latent", ["true", "false"])
def test_script_on_breakout(tmp_path: Path, latent: str) -> None:
    save_encoder(tmp_path / "runs/pretrain/Breakout/vae/seed0/encoder.safetensors",
                 EnvConfig().to_dict() | {"name": "Breakout"})
    done = run_script(tmp_path, f"latent={latent}", "env.max_episode_steps=200")  # games capped for speed
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads((tmp_path / f"runs/agent/Breakout/ppo-latent{latent.capitalize()}/seed0/eval.json").read_text())
    assert result["env"] == "ALE/Breakout-v5" and result["episodes"] == 1


@pytest.mark.slow
def test_script_error_is_one_clear_line(tmp_path: Path) -> None:
    done = run_script(tmp_path, "env=fake", "agent=sac", quick=False)
    assert done.returncode == 2
    assert "python scripts/pretrain_vae.py env=fake" in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "runs/agent/fake/sac-latentTrue/seed0/config.json").exists()


@pytest.mark.slow
def test_evaluate_script_writes_the_sampled_evaluation_beside_the_agent(trained: Path) -> None:
    done = subprocess.run([sys.executable, str(REPO / "scripts/evaluate_agent.py"), f"run={trained}", "episodes=2",
                           "deterministic=false", "device=cpu"], capture_output=True, text=True, timeout=300,
                          check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads((trained / "evaluation-sampled.json").read_text())
    assert result["deterministic"] is False and result["episodes"] == 2 and result["total_steps"] == 128
    assert "sampled policy: return" in done.stdout
    (trained / "evaluation-sampled.json").unlink()  # the module's run stays as training left it


def test_a_models_seconds_are_read_only_beside_that_very_model(trained: Path, tmp_path: Path) -> None:
    from agents.rl.callbacks import model_state_file, saved_seconds

    model = tmp_path / "agent.zip"
    shutil.copyfile(trained / "agent.zip", model)
    assert saved_seconds(model) is None  # no record
    steps = json.loads((trained / "agent.json").read_text())["num_timesteps"]
    model_state_file(model).write_text(json.dumps({"num_timesteps": steps, "train_seconds": 12.5}))
    assert saved_seconds(model) == 12.5
    # a record of the model before (the process died between the zip and its record) says nothing of this one
    model_state_file(model).write_text(json.dumps({"num_timesteps": steps - 64, "train_seconds": 10.0}))
    assert saved_seconds(model) is None
    model_state_file(model).write_text(json.dumps({"num_timesteps": steps}))  # a checkpoint older than the clock
    assert saved_seconds(model) == 0.0
