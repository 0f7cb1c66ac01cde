"""Pretraining end to end: outputs, resume, NaN handling, and the script itself."""

from __future__ import annotations

import importlib
import json
import os
import signal
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import (
    REPO,
    TINY_VAE,
    TINY_VQVAE,
    catches_sigterm,
    fake_env_config,
    sigterm_in_process,
    wait_until,
)

import vaerl
from vaerl.checkpoint import load_model
from vaerl.envs import make_env
from vaerl.errors import ConfigError, TrainingError
from vaerl.models import build_model
from vaerl.stop import RunStopped
from vaerl.training import DataConfig, PretrainConfig, TrainConfig, WeightingConfig, pretrain
from vaerl.training.pretrain import most_informative_run
from vaerl.training.weighting import ForegroundWeighting, motion_weights


def tiny_config(tmp_path: Path, kind: str = "vae", steps: int = 6, **train) -> PretrainConfig:
    model = {"kind": kind, **(TINY_VAE if kind == "vae" else TINY_VQVAE)}
    return PretrainConfig(
        env=fake_env_config(),
        model=model,
        data=DataConfig(frames=300, root=str(tmp_path / "data"), extras=["action"]),
        train=TrainConfig(steps=steps, batch_size=8, val_every=3, val_frames=32, checkpoint_every=3, log_every=2,
                          **train),
        weighting=WeightingConfig(background_frames=50),
        run_dir=str(tmp_path / "run"),
        progress=False,
        device="cpu",
    )


@pytest.mark.parametrize("kind", ["vae", "vqvae"])
def test_pretrain_writes_every_output(tmp_path: Path, kind: str) -> None:
    metrics = pretrain(tiny_config(tmp_path, kind))
    run = tmp_path / "run"
    expected = {"encoder.safetensors", "train_state.pt", "recon.png", "metrics.json", "tb"}
    assert expected <= {p.name for p in run.iterdir()}
    assert (run / "samples.png").exists() == (kind == "vae")
    assert not (run / "parts.png").exists()  # only models with foreground parts draw them
    assert metrics["completed"] and metrics["steps"] == 6
    assert json.loads((run / "metrics.json").read_text())["val"] == pytest.approx(metrics["val"])
    assert 0.0 <= metrics["data_wait_fraction"] <= 1.0 and metrics["frames_per_s"] > 0
    encoder = vaerl.load_encoder(run, "cpu")
    assert encoder.info.extra["step"] == 6 and encoder.spec.frame_shape == (1, 32, 32)


def test_zero_steps_write_the_untrained_encoder_with_the_datas_background(tmp_path: Path) -> None:
    """The baseline a trained encoder is measured against, as a run an agent can read."""
    metrics = pretrain(tiny_config(tmp_path, steps=0))
    assert metrics["completed"] and metrics["steps"] == 0
    encoder = vaerl.load_encoder(tmp_path / "run", "cpu")
    assert encoder.info.extra["step"] == 0 and encoder.model.object_encoder.background.abs().sum() > 0
    torch.manual_seed(0)  # the seed pretraining builds its model under
    untrained = build_model("vae", input_shape=(1, 32, 32), **TINY_VAE)
    for name, value in untrained.state_dict().items():
        if name != "object_encoder.background":
            torch.testing.assert_close(encoder.model.state_dict()[name], value, msg=name)
    with pytest.raises(ConfigError, match=r"train.steps must be >= 0 \(0 writes the untrained encoder\), got -1"):
        TrainConfig(steps=-1)


def test_recon_png_has_originals_above_reconstructions(tmp_path: Path) -> None:
    import imageio.v3 as iio

    pretrain(tiny_config(tmp_path))
    image = iio.imread(tmp_path / "run" / "recon.png")
    # 2 rows x 8 columns of 32x32 frames upscaled 3x with 2-pixel gaps
    assert image.shape == (2 * (96 + 2) + 2, 8 * (96 + 2) + 2, 3)


@pytest.mark.parametrize("frame_stack", [1, 2])
def test_model_with_parts_draws_them(tmp_path: Path, frame_stack: int) -> None:
    import imageio.v3 as iio

    cfg = tiny_config(tmp_path)
    cfg.env.frame_stack = frame_stack
    cfg.model = {**cfg.model, "foreground_parts": 2}
    pretrain(cfg)
    run = tmp_path / "run"
    image = iio.imread(run / "parts.png")
    assert image.shape == (2 * (96 + 2) + 2, 8 * (96 + 2) + 2, 3)
    # the bottom row is the foreground: black where a frame equals the background, in colour where it differs
    # (grey alone, what no part takes, would mean the parts were not drawn)
    bottom = image[98 + 2:-2].astype(int)
    assert (bottom.max(-1) == 0).mean() > 0.2
    assert ((bottom.max(-1) - bottom.min(-1)) > 30).sum() > 20
    assert vaerl.load_encoder(run, "cpu").latent_dim() == 4 + 14 * 14 + 2 * 5  # beside the default cells


@pytest.mark.parametrize(("cells", "named"), [
    ({}, "14x14 tent signed foreground cells"),  # the default
    ({"foreground_cells": 4, "foreground_sums": True, "foreground_cell_kernel": "box", "foreground_cells_signed": False},
     "1x(32+32) foreground projections + 4x4 foreground cells"),
    ({"foreground_cells": 4, "foreground_sums": True, "foreground_cells_signed": False},
     "1x(32+32) foreground projections + 4x4 tent foreground cells"),
])
def test_model_with_cells_pretrains_and_reloads_with_them(tmp_path: Path, cells: dict, named: str) -> None:
    cfg = tiny_config(tmp_path)
    cfg.model = {**cfg.model, **cells}
    pretrain(cfg)
    encoder = vaerl.load_encoder(tmp_path / "run", "cpu")
    size = cells.get("foreground_cells", 14)
    assert encoder.latent_dim() == 4 + (32 + 32 if cells else 0) + size * size
    assert encoder.model.describe_latent() == f"4-d + {named}"
    assert encoder.model.object_encoder.cell_kernel == cells.get("foreground_cell_kernel", "tent")


def test_an_encoder_of_stacked_frames_takes_its_cells_from_the_latest_frame(tmp_path: Path) -> None:
    cfg = tiny_config(tmp_path)
    cfg.env.frame_stack = 2
    pretrain(cfg)
    encoder = vaerl.load_encoder(tmp_path / "run", "cpu")
    assert encoder.spec.frame_stack == 2 and encoder.model.config.frame_stack == 2
    background = encoder.model.object_encoder.background
    assert background.shape == (1, 32, 32) and background.abs().sum() > 0  # the median frame, one frame of it
    frames = torch.randint(0, 256, (4, 2, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    earlier_changed = frames.clone()
    earlier_changed[:, 0] = 255 - earlier_changed[:, 0]
    latest_changed = frames.clone()
    latest_changed[:, 1] = 255 - latest_changed[:, 1]
    base, earlier, latest = (encoder.encode_frames(f) for f in (frames, earlier_changed, latest_changed))
    gaussian = encoder.model.config.latent_dim
    torch.testing.assert_close(earlier[:, gaussian:], base[:, gaussian:])  # the cells read the latest frame alone
    assert not torch.allclose(earlier[:, :gaussian], base[:, :gaussian])  # the Gaussian part reads both
    assert not torch.allclose(latest[:, gaussian:], base[:, gaussian:])


def test_a_model_frame_stack_other_than_the_envs_is_refused(tmp_path: Path) -> None:
    cfg = tiny_config(tmp_path)
    cfg.model = {**cfg.model, "frame_stack": 2}
    with pytest.raises(ConfigError, match="model.frame_stack=2 and env.frame_stack=1: leave model.frame_stack unset"):
        pretrain(cfg)
    assert not (tmp_path / "data").exists()  # refused before any frame is collected


def test_interrupted_run_resumes_where_it_stopped(tmp_path: Path) -> None:
    first = pretrain(tiny_config(tmp_path, steps=3))
    state = torch.load(tmp_path / "run" / "train_state.pt", weights_only=True)
    assert state["step"] == 3 and 0 < state["train_seconds"] <= first["train_seconds"]
    (tmp_path / "run" / "metrics.json").unlink()  # as if the process died before the end
    state["train_seconds"] = 1e6  # a long first session: the resumed run's time goes on from it
    torch.save(state, tmp_path / "run" / "train_state.pt")
    resumed = pretrain(tiny_config(tmp_path, steps=6))
    assert resumed["steps"] == 6 and resumed["resumed_from"] == 3
    assert 1e6 < resumed["train_seconds"] < 1e6 + 600
    assert torch.load(tmp_path / "run" / "train_state.pt", weights_only=True)["step"] == 6


def test_a_finished_run_trained_further_drops_its_old_figures_until_it_finishes_again(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Its ``metrics.json`` describes the encoder it had: while training goes on, the run is unfinished, so nothing
    (an agent choosing among runs by their KL, ``unfinished_run``) reads the figures of an encoder that is gone."""
    pretrain_module = importlib.import_module("vaerl.training.pretrain")
    pretrain(tiny_config(tmp_path, steps=3))
    metrics = tmp_path / "run" / "metrics.json"
    seen = []
    train_loop = pretrain_module.train_loop

    def watched(run):
        seen.append((metrics.exists(), pretrain_module.unfinished_run(run.run_dir)))
        return train_loop(run)

    monkeypatch.setattr(pretrain_module, "train_loop", watched)
    extended = pretrain(tiny_config(tmp_path, steps=6))
    assert seen == [(False, True)]
    assert extended["steps"] == 6 and json.loads(metrics.read_text())["steps"] == 6


def test_runs_are_chosen_by_kl_only_among_draws_of_one_recipe(tmp_path: Path) -> None:
    """``metrics.json`` records what shaped the run besides its seed; a run trained longer, or with another beta,
    is refused by name, since more KL there says nothing about the draw."""
    def run(name: str, seed: int, steps: int = 3, **model) -> Path:
        cfg = tiny_config(tmp_path, steps=steps)
        pretrain(replace(cfg, seed=seed, model={**cfg.model, **model}, run_dir=str(tmp_path / name)))
        return tmp_path / name

    first, second = run("seed0", 0), run("seed1", 1)
    recipe = json.loads((first / "metrics.json").read_text())["recipe"]
    assert recipe["train"] == {"steps": 3, "batch_size": 8, "lr": 1e-3, "grad_clip": 10.0}
    assert recipe["model"]["beta"] == 1.0 and recipe["data"]["frames"] == 300 and recipe["weighting"]["kind"] == "background"
    assert recipe["data"]["source"]["id"] == tiny_config(tmp_path).env.id  # the env the frames came from
    assert most_informative_run([first, second]) in (first, second)
    longer = run("seed2", 2, steps=6)
    with pytest.raises(ConfigError, match=r"seed2 and .*seed0 differ in more than their seed "
                                          r"\(train.steps=6 against train.steps=3\); validation KL ranks only draws"):
        most_informative_run([first, longer])
    lighter = run("seed3", 3, beta=0.1)
    with pytest.raises(ConfigError, match=r"model.beta=0.1 against model.beta=1.0"):
        most_informative_run([first, second, lighter])
    older = json.loads((first / "metrics.json").read_text())
    del older["recipe"]  # as a vaerl that did not record it wrote it: its steps and frames are still compared
    (tmp_path / "seed4").mkdir()
    (tmp_path / "seed4" / "metrics.json").write_text(json.dumps(older))
    assert most_informative_run([tmp_path / "seed4", second]) in (tmp_path / "seed4", second)
    with pytest.raises(ConfigError, match=r"train.steps=6 against train.steps=3"):
        most_informative_run([tmp_path / "seed4", longer])


def test_a_train_state_without_its_training_time_resumes_and_says_so(tmp_path: Path,
                                                                     caplog: pytest.LogCaptureFixture) -> None:
    pretrain(tiny_config(tmp_path, steps=3))
    state = torch.load(tmp_path / "run" / "train_state.pt", weights_only=True)
    del state["train_seconds"]  # as an older vaerl wrote it
    torch.save(state, tmp_path / "run" / "train_state.pt")
    (tmp_path / "run" / "metrics.json").unlink()
    resumed = pretrain(tiny_config(tmp_path, steps=6))
    assert resumed["steps"] == 6 and 0 < resumed["train_seconds"] < 600
    assert "does not say how long its run trained before: train_seconds counts from step 3" in caplog.text


def test_a_run_killed_while_saving_never_resumes_past_its_encoder(tmp_path: Path, monkeypatch) -> None:
    """The encoder is written before the train state: a run killed between them at its last step resumes from
    the older state and writes the encoder again, instead of finishing with the encoder of 3 steps before."""
    module = importlib.import_module("vaerl.training.pretrain")  # (the package exports its function by that name)
    real = module.save_checkpoint

    def killed_at_the_end(path, model, spec, env, extra):
        if extra["step"] == 6:
            raise KeyboardInterrupt
        real(path, model, spec, env, extra)

    monkeypatch.setattr(module, "save_checkpoint", killed_at_the_end)
    with pytest.raises(KeyboardInterrupt):
        pretrain(tiny_config(tmp_path, steps=6))
    assert torch.load(tmp_path / "run" / "train_state.pt", weights_only=True)["step"] == 3
    monkeypatch.setattr(module, "save_checkpoint", real)
    assert pretrain(tiny_config(tmp_path, steps=6))["steps"] == 6
    assert load_model(tmp_path / "run" / "encoder.safetensors")[1].extra["step"] == 6


def test_a_finished_run_trains_on_when_given_more_steps(tmp_path: Path) -> None:
    assert pretrain(tiny_config(tmp_path, steps=3))["steps"] == 3
    longer = pretrain(tiny_config(tmp_path, steps=6))
    assert longer["steps"] == 6 and longer["completed"]
    assert torch.load(tmp_path / "run" / "train_state.pt", weights_only=True)["step"] == 6


def test_resume_matches_an_uninterrupted_run(tmp_path: Path) -> None:
    straight = pretrain(tiny_config(tmp_path / "a", steps=6))
    again = pretrain(tiny_config(tmp_path / "c", steps=6))
    pretrain(tiny_config(tmp_path / "b", steps=3))
    resumed = pretrain(tiny_config(tmp_path / "b", steps=6))
    # The prefetch thread draws batches in a fixed order, so a run repeats itself exactly on a fixed seed.
    assert again["val"] == straight["val"]
    # Weights, optimiser and torch RNG come back from train_state.pt and the batch loader skips the batches
    # already drawn, so the resumed run is the uninterrupted one.
    assert resumed["val"] == straight["val"]


@sigterm_in_process
def test_a_sigterm_saves_the_step_it_reached_and_the_resumed_run_is_the_uninterrupted_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    module = importlib.import_module("vaerl.training.pretrain")
    real = module.optimisation_step

    def terminated_in_step_4(model, optimizer, x, weighting, step, *args, **kwargs):
        if step == 4:  # as from `kill` or a batch system, in the middle of the step
            signal.raise_signal(signal.SIGTERM)
        return real(model, optimizer, x, weighting, step, *args, **kwargs)

    monkeypatch.setattr(module, "optimisation_step", terminated_in_step_4)
    with pytest.raises(RunStopped, match=r"SIGTERM: pretraining stopped at step 4 of 6 .* run the same command") as stop:
        pretrain(tiny_config(tmp_path / "b", steps=6))  # checkpoints every 3 steps: step 4 is saved only for the stop
    assert stop.value.exit_status == 143
    assert torch.load(tmp_path / "b" / "run" / "train_state.pt", weights_only=True)["step"] == 4
    assert load_model(tmp_path / "b" / "run" / "encoder.safetensors")[1].extra["step"] == 4
    assert not (tmp_path / "b" / "run" / "metrics.json").exists()
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
    monkeypatch.setattr(module, "optimisation_step", real)
    resumed = pretrain(tiny_config(tmp_path / "b", steps=6))
    assert resumed["val"] == pretrain(tiny_config(tmp_path / "a", steps=6))["val"]


def test_finished_run_is_not_trained_again(tmp_path: Path) -> None:
    pretrain(tiny_config(tmp_path))
    before = (tmp_path / "run" / "encoder.safetensors").stat().st_mtime_ns
    pretrain(tiny_config(tmp_path))
    assert (tmp_path / "run" / "encoder.safetensors").stat().st_mtime_ns == before


def test_resuming_with_another_model_is_refused(tmp_path: Path) -> None:
    pretrain(tiny_config(tmp_path, steps=3))
    changed = tiny_config(tmp_path, steps=6)
    changed.model["latent_dim"] = 5
    with pytest.raises(ConfigError, match="different model"):
        pretrain(changed)


def test_corrupt_train_state_is_reported(tmp_path: Path) -> None:
    pretrain(tiny_config(tmp_path, steps=3))
    (tmp_path / "run" / "train_state.pt").write_bytes(b"garbage")
    with pytest.raises(TrainingError, match="corrupt"):
        pretrain(tiny_config(tmp_path, steps=6))


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path: Path, monkeypatch) -> None:
    pretrain(tiny_config(tmp_path, steps=3))
    (tmp_path / "run" / "metrics.json").unlink()
    good = (tmp_path / "run" / "encoder.safetensors").read_bytes()
    from vaerl.models.vae import VAE

    original = VAE.training_loss

    def poisoned(self, x, pixel_weights=None, step=0):
        out = original(self, x, pixel_weights, step)
        return out._replace(loss=out.loss * float("nan"))

    monkeypatch.setattr(VAE, "training_loss", poisoned)
    with pytest.raises(TrainingError, match="Lower the learning rate"):
        pretrain(tiny_config(tmp_path, steps=6))
    assert (tmp_path / "run" / "encoder.safetensors").read_bytes() == good


def test_foreground_weighting_marks_moving_pixels() -> None:
    background = np.zeros((1, 4, 4), np.uint8)
    weighting = ForegroundWeighting(background, weight=10.0, threshold=0.05, frame_stack=2, device=torch.device("cpu"))
    x = torch.zeros(1, 2, 4, 4)
    x[0, 1, 2, 3] = 1.0
    w = weighting(x)
    assert float(w[0, 1, 2, 3]) == 10.0 and float(w.sum()) == 10.0 + 31.0


def test_motion_weighting_counts_a_moving_object_twice_and_where_it_was_once() -> None:
    background = np.zeros((1, 4, 4), np.uint8)
    foreground = ForegroundWeighting(background, weight=10.0, threshold=0.05, frame_stack=1, device=torch.device("cpu"))
    previous, x = torch.zeros(1, 1, 4, 4), torch.zeros(1, 1, 4, 4)
    previous[0, 0, 0, 0] = x[0, 0, 0, 0] = 0.5  # a score that stands still
    previous[0, 0, 2, 2], x[0, 0, 2, 3] = 1.0, 1.0  # the ball moved one pixel right
    w = motion_weights(foreground(x), x, previous, weight=10.0, threshold=0.05)[0, 0]
    assert float(w[2, 3]) == 19.0 and float(w[2, 2]) == 10.0 and float(w[0, 0]) == 10.0
    assert float(w.sum()) == 19.0 + 10.0 + 10.0 + 13.0


def run_script(*overrides: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "VAERL_RUNS": str(cwd / "runs"), "VAERL_DATA": str(cwd / "data")}
    return subprocess.run([sys.executable, str(REPO / "scripts" / "pretrain_vae.py"), *overrides, "progress=false"],
                          cwd=cwd, env=env, capture_output=True, text=True, timeout=600, check=False)


@pytest.mark.slow
def test_script_on_fake_env_writes_run_dir_independent_of_cwd(tmp_path: Path) -> None:
    result = run_script("env=fake", "experiment=tiny", "env.kwargs.size=[32,32]",
                        "model.encoder_layers=[[8,4,2,1],[16,4,2,1]]", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    run = tmp_path / "runs" / "pretrain" / "fake" / "vae" / "seed0"
    assert (run / "encoder.safetensors").exists() and (run / "recon.png").exists()


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="sees the handler through /proc (Linux)")
def test_script_stopped_by_sigterm_saves_and_exits_as_terminated(tmp_path: Path) -> None:
    env = {**os.environ, "VAERL_RUNS": str(tmp_path / "runs"), "VAERL_DATA": str(tmp_path / "data")}
    command = [sys.executable, str(REPO / "scripts" / "pretrain_vae.py"), "env=fake", "experiment=tiny",
               "env.kwargs.size=[32,32]", "model.encoder_layers=[[8,4,2,1],[16,4,2,1]]", "progress=false",
               "train.steps=100000", "train.checkpoint_every=100000", "train.val_every=100000"]
    # the frames collected first: a process that catches SIGTERM is then in its training loop, not collecting
    collected = subprocess.run([*command, "train.steps=1", f"hydra.run.dir={tmp_path}/collect"], cwd=tmp_path,
                               env=env, capture_output=True, text=True, timeout=600, check=False)
    assert collected.returncode == 0, collected.stderr[-3000:]
    with subprocess.Popen(command, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True) as process:
        wait_until(process, lambda: catches_sigterm(process.pid), "no training loop listening")
        process.send_signal(signal.SIGTERM)
        output = process.communicate(timeout=120)[0]
    assert process.returncode == 143, output[-3000:]
    state = torch.load(tmp_path / "runs/pretrain/fake/vae/seed0/train_state.pt", weights_only=True)
    assert 0 < state["step"] < 100000
    assert f"SIGTERM: pretraining stopped at step {state['step']} of 100000" in output
    assert "run the same command again to resume" in output


@pytest.mark.slow
@pytest.mark.atari
def test_script_on_breakout_with_tiny_settings(tmp_path: Path) -> None:
    result = run_script("env=Breakout", "model=vqvae", "experiment=tiny", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    encoder = vaerl.load_encoder(tmp_path / "runs/pretrain/Breakout/vqvae/seed0", "cpu")
    assert encoder.info.env_id == "ALE/Breakout-v5" and encoder.spec.input_shape == (1, 84, 84)


@pytest.mark.slow
def test_script_typo_gives_a_clear_error(tmp_path: Path) -> None:
    result = run_script("env=fake", "experiment=tiny", "train.stpes=3", cwd=tmp_path)
    assert result.returncode != 0
    assert "stpes" in result.stderr
    result = run_script("env=fake", "experiment=tiny", "env.kind=mujoco", cwd=tmp_path)
    assert result.returncode == 2 and "env.kind must be one of" in result.stderr
    assert not (tmp_path / "runs" / "pretrain" / "fake" / "vae" / "seed0" / "encoder.safetensors").exists()



def _rewrite_saved_model(run_dir: Path, drop: tuple[str, ...]) -> None:
    """Make the run's train state look written by an older vaerl that lacked the settings ``drop``."""
    path = run_dir / "train_state.pt"
    state = torch.load(path, weights_only=True)
    identity = json.loads(state["identity"])
    for key in drop:
        del identity["model"][key]
    state["identity"] = json.dumps(identity)
    torch.save(state, path)


def test_a_run_written_before_a_model_setting_existed_resumes(tmp_path: Path) -> None:
    pretrain(tiny_config(tmp_path, steps=3))
    (tmp_path / "run" / "metrics.json").unlink()
    _rewrite_saved_model(tmp_path / "run", drop=("contrast_weight", "contrast_offset", "contrast_layer"))
    assert pretrain(tiny_config(tmp_path, steps=6))["steps"] == 6


def test_a_missing_setting_means_its_value_before_a_changed_default(tmp_path: Path) -> None:
    pretrain(tiny_config(tmp_path, steps=3))
    # without these keys the run was written before the foreground path existed: a plain VAE, which is not
    # what the config builds now, so it must not resume into a model with cells
    _rewrite_saved_model(tmp_path / "run", drop=("foreground_projections", "foreground_cells"))
    with pytest.raises(ConfigError, match="different model"):
        pretrain(tiny_config(tmp_path, steps=6))


def ball_reconstructions(tmp_path: Path, weighting: str, steps: int = 1000) -> tuple[np.ndarray, np.ndarray]:
    """Pretrain the default recipe (every model and weighting field at its default; only the trunk is shrunk to the
    32x32 frames) on fake-env frames with a one-pixel ball, then reconstruct 200 frames of a held-out game.

    Returns the reconstruction at the ball's pixel, and the distance from the ball to the reconstruction's brightest
    pixel of the playfield (below the wall, above the paddle), per frame."""
    env_config = fake_env_config(ball_radius=0)
    config = PretrainConfig(
        env=env_config,
        model={"kind": "vae", **TINY_VAE},
        data=DataConfig(frames=2000, root=str(tmp_path / "data"), extras=["action"]),
        train=TrainConfig(steps=steps, batch_size=32, val_every=steps, val_frames=64, checkpoint_every=steps,
                          log_every=100),
        weighting=WeightingConfig(kind=weighting, background_frames=200),
        run_dir=str(tmp_path / "run"),
        progress=False,
        device="cpu",
    )
    pretrain(config)
    encoder = vaerl.load_encoder(tmp_path / "run", "cpu")
    env = make_env(env_config, seed=123)
    env.reset(seed=123)
    env.action_space.seed(123)
    frames, balls = [], []
    for _ in range(200):
        frame, *_ = env.step(env.action_space.sample())
        frames.append(frame)
        ball = env.unwrapped.ball
        balls.append((int(ball[1] * 31), int(ball[0] * 31)))
    with torch.no_grad():
        recon = encoder.model.reconstruct(torch.tensor(np.stack(frames)).permute(0, 3, 1, 2).float() / 255)[:, 0]
    rows, cols = np.array(balls).T
    at_ball = recon[np.arange(len(balls)), rows, cols].numpy()
    playfield = recon[:, 3:28]  # the wall is rows 0-1 at 32x32, the paddle row 28
    peak = playfield.flatten(1).argmax(1).numpy()
    distance = np.maximum(np.abs(peak // 32 + 3 - rows), np.abs(peak % 32 - cols))
    return at_ball, distance[(rows >= 3) & (rows < 28)]


def test_the_default_recipe_draws_a_moving_one_pixel_ball_that_an_unweighted_likelihood_only_hints_at(
    tmp_path: Path, one_thread: None
) -> None:
    """The ball is one pixel in 1,024: the default recipe (background weighting, the signed foreground cells beside
    the Gaussian part) draws it where it is, brighter than half the ball in most frames. With a plain likelihood its
    error is too small to be worth drawing: the cells still place a faint blip at the right pixel, but under half the
    ball's brightness in nearly every frame."""
    at_ball, distance = ball_reconstructions(tmp_path / "default", "background")
    assert np.mean(at_ball > 0.5) > 0.6, at_ball  # ball 1.0 on a background of 0.08
    assert np.mean(distance <= 1) > 0.6, distance
    at_ball, _ = ball_reconstructions(tmp_path / "none", "none")
    assert np.mean(at_ball > 0.5) < 0.2, at_ball


def test_motion_weighting_draws_the_moving_one_pixel_ball_too(tmp_path: Path, one_thread: None) -> None:
    """``weighting=motion`` keeps the background weighting's foreground and weighs the ball's pixels twice: it draws
    the ball where it is as the default recipe does."""
    at_ball, distance = ball_reconstructions(tmp_path, "motion")
    assert np.mean(at_ball > 0.5) > 0.6, at_ball
    assert np.mean(distance <= 1) > 0.6, distance
