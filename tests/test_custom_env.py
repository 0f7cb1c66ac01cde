"""The custom-env path: a real non-Atari env rendered to pixels, extras it cannot give, leftovers of interrupted runs."""

from __future__ import annotations

import json
import os
import re
import shlex
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO

import vaerl
from vaerl.data import FrameDatasetWriter, collect_frames
from vaerl.data.dataset import remove_stale_partials
from vaerl.envs import EnvConfig, make_env, preprocess_spec

pytest.importorskip("pygame", reason="classic-control rendering needs gymnasium[classic-control]")

CARTPOLE = EnvConfig(name="cartpole", id="vaerl.envs.rendered:rendered", kind="gym",
                     kwargs={"env_id": "CartPole-v1"}, size=(32, 32), grayscale=False)


def test_extras_an_env_cannot_give_are_skipped_with_a_log_line(tmp_path: Path, caplog) -> None:
    env = make_env(CARTPOLE, seed=0)
    with caplog.at_level("INFO", logger="vaerl.data.collect"):
        dataset = collect_frames(env, preprocess_spec(CARTPOLE, env), 30, tmp_path / "frames",
                                 extras=["ram", "action", "reward"], progress=False)
    assert dataset.extra_names == ["action", "reward"] and len(dataset) == 30
    assert dataset.frames(np.arange(3)).shape == (3, 3, 32, 32)
    assert "has no RAM" in caplog.text


def dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_leftovers_of_dead_writers_are_removed_and_live_ones_kept(tmp_path: Path) -> None:
    path = tmp_path / "frames"
    host = socket.gethostname()
    dead = tmp_path / f"frames.partial-{host}-{dead_pid()}-aaaa"
    alive = tmp_path / f"frames.partial-{host}-{os.getpid()}-bbbb"
    elsewhere = tmp_path / f"frames.partial-another-host-{dead_pid()}-cccc"
    legacy_old, legacy_new = tmp_path / "frames.partial-dddddddd", tmp_path / "frames.partial-eeeeeeee"
    for folder in (dead, alive, elsewhere, legacy_old, legacy_new):
        folder.mkdir()
    os.utime(legacy_old, (time.time() - 2 * 86_400,) * 2)
    other_dataset = tmp_path / f"other.partial-{host}-{dead_pid()}-ffff"
    other_dataset.mkdir()
    writer = FrameDatasetWriter(path, (1, 4, 4))
    writer.add(np.zeros((2, 1, 4, 4), np.uint8), 0)
    writer.close()
    assert not dead.exists() and not legacy_old.exists()
    assert alive.exists() and elsewhere.exists() and legacy_new.exists() and other_dataset.exists()
    assert (path / "meta.json").exists() and remove_stale_partials(path) == []


def readme_commands() -> list[list[str]]:
    """The custom-env commands of the README, as a user would type them (scripts made absolute)."""
    text = (REPO / "README.md").read_text()
    lines = re.findall(r"^python scripts/\S+ env=custom env.name=cartpole .*$", text, flags=re.MULTILINE)
    assert [line.split()[1] for line in lines] == ["scripts/pretrain_vae.py", "scripts/train_agent.py"], lines
    return [[sys.executable, str(REPO / words[1]), *words[2:]] for words in map(shlex.split, lines)]


@pytest.mark.slow
def test_the_readme_custom_env_commands_run_end_to_end(tmp_path: Path) -> None:
    """Pretrain on CartPole's rendered frames, wrap the env, train an agent on its latents: tiny budgets."""
    pretrain, train_agent = readme_commands()
    env = {**os.environ, "VAERL_RUNS": str(tmp_path / "runs"), "VAERL_DATA": str(tmp_path / "data")}
    tiny_pretrain = ["env.size=[32,32]", "model.encoder_layers=[[8,4,2,1],[16,4,2,1]]", "model.latent_dim=8",
                     "data.frames=300", "train.steps=4", "train.batch_size=8", "train.val_every=4",
                     "train.val_frames=32", "train.checkpoint_every=4", "weighting.background_frames=50",
                     "progress=false"]  # data.extras keeps its default, which asks for RAM
    done = subprocess.run([*pretrain, *tiny_pretrain], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    run = tmp_path / "runs/pretrain/cartpole/vae/seed0"
    assert (run / "encoder.safetensors").is_file()
    assert "has no RAM" in done.stdout + done.stderr

    from vaerl.envs.rendered import rendered

    latent_env = vaerl.wrap(rendered("CartPole-v1"), run, device="cpu")
    obs, _ = latent_env.reset(seed=0)
    assert obs.shape == (8 + 14 * 14,) and latent_env.observation_space.contains(obs)
    assert latent_env.observation_space.contains(latent_env.step(latent_env.action_space.sample())[0])

    tiny_agent = ["env.size=[32,32]", "agent.n_envs=2", "agent.hyperparams.n_steps=16", "agent.hyperparams.batch_size=16",
                  "agent.hyperparams.n_epochs=1", "total_steps=32", "eval.every=0", "eval.final_episodes=1",
                  "eval.n_envs=1", "video.steps=4", "checkpoint_every=32", "threads=1", "progress_bar=false"]
    done = subprocess.run([*train_agent, *tiny_agent], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads((tmp_path / "runs/agent/cartpole/ppo-latentTrue/seed0/eval.json").read_text())
    assert result["latent"] is True and result["episodes"] == 1 and result["total_steps"] >= 32
