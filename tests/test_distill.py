"""Distilling a pixel agent into a latent policy: the student's observations, its learning, its run dir, bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import REPO
from test_agents import FAKE, config, save_encoder

from agents.rl import load_agent, play, train_agent
from agents.rl.config import EncoderOptions
from agents.rl.distill import (
    RESULTS,
    Dataset,
    DistillConfig,
    DistillOptions,
    FrameLatents,
    distill_agent,
    greedy_and_played,
)
from agents.rl.envs import make_run_env, run_observations
from vaerl.errors import ConfigError

QUICK_DISTILL = DistillOptions(frames=96, dagger_rounds=1, dagger_frames=48, epochs=20, batch_size=16, lr=1e-2,
                               eval_episodes=2)
GREEDY_ACTION = 2


@pytest.fixture(scope="module")
def teacher(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A pixel agent on the fake env whose greedy action is always ``GREEDY_ACTION``, and the fake env's encoder."""
    tmp = tmp_path_factory.mktemp("teacher")
    save_encoder(tmp / "runs/pretrain/fake/vae/seed0/encoder.safetensors", FAKE)
    cfg = config(tmp, latent=False, **{"agent.pixel": {"policy": "CnnPolicy"}, "eval.every": 0, "video.steps": 0})
    train_agent(cfg)
    agent = load_agent(cfg.output_dir, device="cpu")
    with torch.no_grad():  # a known policy to learn: one action whatever the frame
        agent.model.policy.action_net.weight.zero_()
        agent.model.policy.action_net.bias.copy_(20.0 * (torch.arange(agent.model.action_space.n) == GREEDY_ACTION))
    agent.model.save(cfg.output_dir / "agent.zip")
    agent.env.close()
    return cfg.output_dir


def distill_config(teacher: Path, tmp_path: Path, **changes) -> DistillConfig:
    return DistillConfig(teacher=str(teacher), distill=changes.pop("distill", QUICK_DISTILL), device="cpu",
                         threads=1, run_dir=str(tmp_path / "student"), **changes)


def test_student_observations_are_what_its_own_env_wrapper_makes(teacher: Path) -> None:
    pixels = load_agent(teacher, device="cpu")
    student_cfg = config(teacher.parents[4])
    observations = run_observations(student_cfg, "cpu")
    pixel_env = make_run_env(pixels.config, pixels.observations, n_envs=2, seed=5, training=False)
    latent_env = make_run_env(student_cfg, observations, n_envs=2, seed=5, training=False)
    pipeline = FrameLatents(observations, 2, pixel_env.observation_space)
    rng = np.random.default_rng(0)
    frames, ours = pixel_env.reset(), latent_env.reset()
    theirs, _ = pipeline.step(pipeline.newest(frames), np.ones(2, bool))
    ends = 0
    for _ in range(70):  # two episodes of 30 steps: resets restart both stacks alike
        np.testing.assert_allclose(theirs, ours, atol=1e-5)
        actions = rng.integers(0, pixel_env.action_space.n, 2)
        frames, _, dones, _ = pixel_env.step(actions)
        ours, _, _, _ = latent_env.step(actions)
        theirs, _ = pipeline.step(pipeline.newest(frames), dones)
        ends += int(dones.sum())
    assert ends >= 4
    for env in (pixel_env, latent_env, pixels.env):
        env.close()


def test_student_learns_the_teachers_actions_and_reloads_as_a_latent_run(teacher: Path, tmp_path: Path) -> None:
    results = distill_agent(distill_config(teacher, tmp_path))
    rounds = results["rounds"]
    assert [r["actor"] for r in rounds] == ["teacher", "student"]
    assert rounds[0]["observations"] == 96 and rounds[1]["observations"] == 96 + 48
    assert rounds[0]["heldout_agreement"] == 1.0 and rounds[0]["heldout_rows"] > 0  # teacher's states: learnt
    assert rounds[0]["heldout_rows"] + rounds[0]["heldout_duplicates"] == 10  # the last tenth of 96
    assert 0.0 < rounds[1]["actor_agreement"] <= 1.0  # states the student reached, labelled before it learnt them
    assert rounds[1]["heldout_agreement"] == 1.0 and rounds[1]["heldout_agreement_last_round"] == 1.0
    assert rounds[1]["train_loss"] < 0.05  # cross-entropy to a constant action, near zero once learnt
    assert len(rounds[1]["returns"]) == 2 and results["teacher"]["episodes"] == 2
    assert json.loads((tmp_path / "student" / RESULTS).read_text())["rounds"] == rounds

    student = load_agent(tmp_path / "student", device="cpu")
    assert student.config.latent and student.env.observation_space.shape == (4 * student.encoder.latent_dim(),)
    obs = student.env.reset()
    for _ in range(20):  # its own play on held-out seeds
        action, _ = student.model.predict(obs, deterministic=True)
        assert (action == GREEDY_ACTION).all()
        obs = student.env.step(action)[0]
    assert len(play(student, episodes=1)) == 1
    student.env.close()


def test_pixel_student_learns_from_the_teachers_own_frames_and_reloads_as_a_pixel_run(teacher: Path,
                                                                                        tmp_path: Path) -> None:
    results = distill_agent(distill_config(teacher, tmp_path, student="pixels"))
    rounds = results["rounds"]
    assert results["student"]["sees"] == "pixels" and "encoder" not in results["student"]
    assert rounds[1]["observations"] == 96 + 48 and rounds[1]["heldout_agreement"] == 1.0
    assert rounds[1]["train_loss"] < 0.05
    assert not (tmp_path / "student" / "encoder.safetensors").exists()
    student = load_agent(tmp_path / "student", device="cpu")
    assert not student.config.latent and student.encoder is None
    pixels = load_agent(teacher, device="cpu")
    assert student.env.observation_space.shape == pixels.env.observation_space.shape
    pixels.env.close()
    action, _ = student.model.predict(student.env.reset(), deterministic=True)
    assert (action == GREEDY_ACTION).all()
    student.env.close()
    with pytest.raises(ConfigError, match=r"student must be one of \('latent', 'pixels'\), got 'frames'"):
        distill_config(teacher, tmp_path, student="frames")


def test_student_reads_the_latents_as_asked(teacher: Path, tmp_path: Path) -> None:
    options = DistillOptions(frames=32, dagger_rounds=0, epochs=1, eval_episodes=1)
    distill_agent(distill_config(teacher, tmp_path, encoder=EncoderOptions(shared_layers=[8]), distill=options))
    student = load_agent(tmp_path / "student", device="cpu")
    assert student.model.policy.features_extractor.features_dim == 8
    student.env.close()


def test_held_out_rows_identical_to_training_rows_are_not_counted() -> None:
    data = Dataset()
    rows = np.arange(20, dtype=np.float32).reshape(10, 2)
    rows[9] = rows[0]  # the last row (held out) comes back to a training state
    data.add(rows, np.arange(10), holdout=0.2)
    observations, actions = data.held_out()
    assert actions.tolist() == [8] and observations.tolist() == [rows[8].tolist()] and data.duplicates() == 1
    assert len(data.training()[1]) == 8
    data.add(rows[:5] + 100, np.arange(5), holdout=0.4)  # a second round: its last two rows are held out
    assert data.held_out(last_round=True)[1].tolist() == [3, 4]
    assert data.held_out()[1].tolist() == [8, 3, 4]


def test_the_player_samples_its_actions_and_the_label_stays_greedy(teacher: Path) -> None:
    agent = load_agent(teacher, device="cpu", n_envs=2)
    with torch.no_grad():  # action 2 most likely, the others not rare
        agent.model.policy.action_net.bias.copy_(1.0 * (torch.arange(agent.model.action_space.n) == GREEDY_ACTION))
    obs = np.repeat(agent.env.reset(), 200, axis=0)
    greedy, played = greedy_and_played(agent.model, obs, sample=True)
    assert (greedy == GREEDY_ACTION).all() and 0.2 < (played != GREEDY_ACTION).mean() < 0.9
    greedy, played = greedy_and_played(agent.model, obs, sample=False)
    assert (played == greedy).all()
    agent.env.close()


def test_refuses_a_latent_teacher_a_finetuned_student_and_a_finished_run(teacher: Path, tmp_path: Path) -> None:
    latent_run = tmp_path / "latent"
    save_encoder(tmp_path / "runs/pretrain/fake/vae/seed0/encoder.safetensors", FAKE)
    train_agent(config(tmp_path, run_dir=str(latent_run), **{"eval.every": 0, "video.steps": 0}))
    with pytest.raises(ConfigError, match="must see pixels"):
        distill_agent(distill_config(latent_run, tmp_path))
    with pytest.raises(ConfigError, match="frozen latents"):
        distill_agent(distill_config(teacher, tmp_path, encoder=EncoderOptions(finetune=True)))
    with pytest.raises(ConfigError, match="distill.holdout"):
        DistillOptions(holdout=1.0)

    options = DistillOptions(frames=16, dagger_rounds=0, epochs=1, eval_episodes=1)
    distill_agent(distill_config(teacher, tmp_path, distill=options))
    before = (tmp_path / "student" / RESULTS).read_bytes()
    with pytest.raises(ConfigError, match="overwrite=true"):
        distill_agent(distill_config(teacher, tmp_path, distill=options))
    assert (tmp_path / "student" / RESULTS).read_bytes() == before


@pytest.mark.slow
def test_script_writes_the_student_beside_the_teacher(teacher: Path) -> None:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    done = subprocess.run([sys.executable, str(REPO / "scripts/distill_agent.py"), f"teacher={teacher}",
                           "distill.frames=32", "distill.dagger_rounds=0", "distill.epochs=1",
                           "distill.eval_episodes=1", "device=cpu", "threads=1", "seed=3",
                           "encoder.shared_layers=[8]"],
                           cwd=teacher, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    results = json.loads((teacher / "distilled/seed3" / RESULTS).read_text())
    assert results["seed"] == 3 and results["student"]["encoder_options"]["shared_layers"] == [8]
    assert "held-out agreement" in done.stdout
