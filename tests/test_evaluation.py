"""Looking at latents (traversals, interpolations, videos) and the evaluation report, on the fake env."""

import dataclasses
import json
import subprocess
import sys

import imageio.v3 as iio
import numpy as np
import pytest
import torch
from conftest import REPO
from gymnasium.error import DependencyNotInstalled
from hydra import compose, initialize_config_dir

from vaerl import load_encoder
from vaerl.checkpoint import save_checkpoint
from vaerl.cli import parse_config
from vaerl.envs import EnvConfig, make_env, preprocess_spec
from vaerl.errors import ConfigError
from vaerl.evaluation.config import BenchProbeConfig, EvaluateRunConfig, ProbeRunConfig
from vaerl.evaluation.prior import PriorSettings
from vaerl.evaluation.probes import ProbeSettings
from vaerl.evaluation.report import ReportSettings
from vaerl.evaluation.runs import default_encoder_path, run_evaluation
from vaerl.evaluation.traversals import interpolate, latent_traversal
from vaerl.evaluation.video import reconstruction_frames, write_video
from vaerl.models import VAE, build_model

TINY = {
    "vae": {"encoder_layers": [[8, 4, 2, 1], [8, 4, 2, 1]], "hidden_dim": 32, "latent_dim": 4},
    "vqvae": {"encoder_layers": [[8, 4, 2, 1], [8, 4, 2, 1]], "num_codes": 16, "embedding_dim": 4},
}


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def fake_env():
    return EnvConfig(name="fake", id="vaerl/FakeFrames-v0", kind="gym", kwargs={"size": [32, 32], "max_steps": 80})


@pytest.fixture(scope="module")
def runs(tmp_path_factory, fake_env):
    """A runs folder holding random-init tiny VAE and VQ-VAE checkpoints where pretraining would put them."""
    root = tmp_path_factory.mktemp("runs")
    env = make_env(fake_env)
    spec = preprocess_spec(fake_env, env)
    for kind, kwargs in TINY.items():
        torch.manual_seed(0)
        model = build_model(kind, input_shape=spec.input_shape, **kwargs)
        save_checkpoint(default_encoder_path(root, "fake", kind, 0), model, spec, fake_env.to_dict())
    return root


def _frames(n=2, seed=0):
    return torch.rand(n, 1, 32, 32, generator=torch.Generator().manual_seed(seed))


# ---------------------------------------------------------------------------------------------- traversals
@pytest.mark.parametrize("kind", ["vae", "vqvae"])
def test_interpolation_runs_from_one_reconstruction_to_the_other(kind):
    torch.manual_seed(0)
    model = build_model(kind, input_shape=(1, 32, 32), **TINY[kind]).eval()
    x = _frames()
    path = interpolate(model, x[:1], x[1:], steps=5)
    assert path.shape == (5, 1, 32, 32)
    with torch.no_grad():
        ends = model.reconstruct(x)
    assert torch.allclose(path[0], ends[0], atol=1e-5) and torch.allclose(path[-1], ends[1], atol=1e-5)


def test_traversing_a_dimension_the_decoder_ignores_changes_nothing():
    torch.manual_seed(0)
    model = build_model("vae", input_shape=(1, 32, 32), **TINY["vae"]).eval()
    assert isinstance(model, VAE)
    with torch.no_grad():
        model.from_latent[0].weight[:, 2] = 0.0  # latent dimension 2 no longer reaches the decoder
    grid = latent_traversal(model, _frames(1), steps=5, span=3.0)
    assert grid.shape == (4, 5, 1, 32, 32) and 0.0 <= float(grid.min()) and float(grid.max()) <= 1.0
    assert torch.allclose(grid[2], grid[2, :1].expand_as(grid[2]), atol=1e-6)
    assert not torch.allclose(grid[0], grid[0, :1].expand_as(grid[0]), atol=1e-4)


def test_vq_traversal_rows_are_code_channels_around_the_reconstruction():
    torch.manual_seed(0)
    model = build_model("vqvae", input_shape=(1, 32, 32), **TINY["vqvae"]).eval()
    x = _frames(1)
    grid = latent_traversal(model, x, steps=3, span=0.0, dims=[0, 3])
    assert grid.shape == (2, 3, 1, 32, 32)
    with torch.no_grad():
        assert torch.allclose(grid[1, 2], model.reconstruct(x)[0], atol=1e-5)


# ---------------------------------------------------------------------------------------------- video
def test_gif_round_trip(tmp_path):
    frames = np.random.default_rng(0).integers(0, 255, (4, 10, 12, 3), dtype=np.uint8)
    path = write_video(tmp_path / "clip.gif", frames, fps=10)
    assert iio.imread(path, index=None).shape[:3] == (4, 10, 12)
    with pytest.raises(ValueError, match="format"):
        write_video(tmp_path / "clip.avi", frames)


def test_mp4_without_a_backend_says_what_to_install(tmp_path, monkeypatch):
    monkeypatch.setattr("vaerl.evaluation.video.mp4_available", lambda: False)  # as on a machine without one
    with pytest.raises(DependencyNotInstalled, match="imageio"):
        write_video(tmp_path / "clip.mp4", np.zeros((2, 8, 8, 3), np.uint8))
    assert not (tmp_path / "clip.mp4").exists()


def test_video_shows_input_reconstruction_and_error_side_by_side():
    torch.manual_seed(0)
    model = build_model("vae", input_shape=(1, 32, 32), **TINY["vae"])
    frames = (np.random.default_rng(0).random((3, 1, 32, 32)) * 255).astype(np.uint8)
    video = reconstruction_frames(model, frames, scale=2)
    assert video.shape == (3, 64, 2 * (3 * 32 + 4), 3) and video.dtype == np.uint8
    assert np.array_equal(video[:, ::2, :64:2, 0], frames[:, 0])  # the left panel is the input itself
    with torch.no_grad():
        recon = model.reconstruct(torch.as_tensor(frames) / 255.0)[:, 0].numpy() * 255
    middle, right = video[:, ::2, 2 * 34::2, 0][:, :, :32], video[:, ::2, 2 * 68::2, 0]  # after 2-pixel gaps
    assert np.abs(middle - recon).max() <= 1  # the decoder means
    assert np.abs(right - np.abs(frames[:, 0] - recon)).max() <= 1  # and the absolute error, never clipped to 0
    assert right.mean() > 10  # a random-init model leaves a visible error


# ---------------------------------------------------------------------------------------------- the report
def _evaluate_config(runs, data, kind, **changes):
    cfg = EvaluateRunConfig(
        env=EnvConfig(name="fake", id="vaerl/FakeFrames-v0", kind="gym"), kind=kind, runs_root=str(runs),
        data_root=str(data), device="cpu", num_threads=1, progress=False,
        probe=ProbeSettings(frames=640, min_episode_length=40, max_epochs=3, patience=2, batch_size=256),
        prior=PriorSettings(channels=8, layers=2, steps=6, batch_size=16, eval_every=3),
        report=ReportSettings(reconstructions=4, samples=4, traversal_steps=3, traversal_rows=3, interpolations=2,
                              interpolation_steps=3, video_frames=12, scale=1, metric_frames=64),
    )
    return dataclasses.replace(cfg, **changes)


def test_evaluation_smoke_run_on_the_fake_env(runs, tmp_path, capsys):
    metrics = run_evaluation(_evaluate_config(runs, tmp_path / "data", "vqvae"))
    out = runs / "pretrain" / "fake" / "vqvae" / "seed0" / "evaluation"
    for name in ("reconstructions.png", "samples.png", "traversals.png", "interpolations.png", "reconstruction.gif",
                 "probes.md", "probes.json", "metrics.json"):
        assert (out / name).stat().st_size > 0, name
    assert json.loads((out / "metrics.json").read_text()) == json.loads(json.dumps(metrics))
    assert set(metrics["probes"]["f1"]) == {"ball_x", "ball_y", "paddle_x"}
    assert set(metrics["probes"]["mean_f1"]) == {"encoder", "random_init", "majority"}
    prior = metrics["prior"]
    assert 0.0 < prior["test_bits_per_code"] < 3 * prior["uniform_bits_per_code"]
    assert (out.parent / "prior.safetensors").exists()
    assert iio.imread(out / "reconstruction.gif", index=None).shape[0] == 12
    printed = capsys.readouterr().out
    assert "prior:" in printed and "probes (FakeFrames)" in printed

    # a second report reuses the prior fitted to this codebook
    again = run_evaluation(_evaluate_config(runs, tmp_path / "data", "vqvae", out_dir=str(tmp_path / "again")))
    assert again["prior"]["reused"] and again["prior"]["test_bits_per_code"] == pytest.approx(prior["test_bits_per_code"])


def test_evaluation_of_a_vae_writes_prior_samples_without_a_code_prior(runs, tmp_path):
    metrics = run_evaluation(_evaluate_config(runs, tmp_path / "data", "vae", baselines=["majority"]))
    assert "prior" not in metrics and metrics["traversal"]["rows"] == "latent dimensions by KL"
    assert set(metrics["probes"]["mean_f1"]) == {"encoder", "majority"}
    assert "bits_per_dim" in metrics["reconstruction"]


def test_an_encoder_of_another_env_is_refused(runs, tmp_path):
    cfg = _evaluate_config(runs, tmp_path / "data", "vae",
                           encoder=str(default_encoder_path(runs, "fake", "vae", 0)),
                           env=EnvConfig(name="Pong", id="ALE/Pong-v5"))
    with pytest.raises(ConfigError, match="env.id='ALE/Pong-v5' here, 'vaerl/FakeFrames-v0' in pretraining"):
        run_evaluation(cfg)


# ---------------------------------------------------------------------------------------------- configs and scripts
@pytest.mark.parametrize("name,schema", [("probe", ProbeRunConfig), ("evaluate_encoder", EvaluateRunConfig),
                                         ("bench_probe", BenchProbeConfig)])
@pytest.mark.parametrize("probe", ["atariari", "quick"])
def test_configs_compose_into_their_schema(name, schema, probe):
    from omegaconf import OmegaConf

    overrides = [f"probe={probe}"] + (["env=Breakout"] if name != "bench_probe" else [])
    with initialize_config_dir(config_dir=str(REPO / "configs"), version_base="1.3"):
        cfg = compose(config_name=name, overrides=overrides)
    parsed = parse_config(schema, OmegaConf.to_container(cfg, resolve=True))
    assert parsed.probe.frames > 0
    if name != "bench_probe":
        assert parsed.env.id == "ALE/Breakout-v5" and parsed.encoder is None


@pytest.mark.slow
def test_probe_script_prints_the_table_and_writes_json(runs, tmp_path):
    out = tmp_path / "probe.json"
    result = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "probe.py"), "env=fake", "kind=vae", f"paths.runs={runs}",
         f"paths.data={tmp_path / 'data'}", "probe=quick", "probe.frames=640", "probe.min_episode_length=40",
         "probe.max_epochs=2", "device=cpu", "num_threads=1", "progress=false", f"out={out}",
         f"hydra.run.dir={tmp_path / 'hydra'}"],
        capture_output=True, text=True, timeout=120, check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "| **mean F1** |" in result.stdout and "ball_x" in result.stdout
    report = json.loads(out.read_text())
    assert report["game"] == "FakeFrames" and set(report["mean_f1"]) == {"encoder", "random_init", "majority"}
    assert load_encoder(report["info"]["encoder"]).kind == "vae"
