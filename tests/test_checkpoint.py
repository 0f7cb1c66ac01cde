"""Checkpoints and load_encoder: round trips, metadata, and every way a file can be wrong."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import SUMS, TINY_VAE
from safetensors.torch import load_file, save_file

import vaerl
from vaerl.checkpoint import load_model, read_checkpoint_info, save_checkpoint
from vaerl.encoder import check_encoder_env, env_differences
from vaerl.envs import make_env, preprocess_spec
from vaerl.errors import CheckpointError, ObservationError
from vaerl.models import build_model
from vaerl.models.blocks import to_unit


def test_round_trip_gives_identical_outputs(checkpoint: Path, fake_config) -> None:
    encoder = vaerl.load_encoder(checkpoint, device="cpu")
    model, _ = load_model(checkpoint)
    env = make_env(fake_config)
    obs = np.stack([env.reset(seed=s)[0] for s in range(3)])
    frames = torch.from_numpy(encoder.preprocess(obs)).float() / 255
    torch.testing.assert_close(encoder.encode(obs), model.features(frames))
    torch.testing.assert_close(encoder.encode(obs), vaerl.load_encoder(checkpoint, "cpu").encode(obs))


def test_loaded_encoder_is_in_eval_mode_with_its_spec(checkpoint: Path, fake_config) -> None:
    encoder = vaerl.load_encoder(checkpoint, device="auto")
    assert not encoder.model.training
    assert encoder.spec.source_shape == (32, 32, 1)
    assert encoder.info.env["id"] == fake_config.id and encoder.info.vaerl_version == vaerl.__version__


def test_any_batch_size_encodes(checkpoint: Path, fake_config) -> None:
    encoder = vaerl.load_encoder(checkpoint, "cpu")
    env = make_env(fake_config)
    for n in (1, 5):
        obs = np.stack([env.reset(seed=s)[0] for s in range(n)])
        assert encoder.encode(obs).shape == (n, encoder.latent_dim())


def test_decoding_an_encoding_gives_the_reconstruction(checkpoint: Path, fake_config) -> None:
    encoder = vaerl.load_encoder(checkpoint, "cpu")
    obs = make_env(fake_config).reset(seed=0)[0][None]
    with torch.no_grad():
        reconstruction = encoder.model.reconstruct(to_unit(torch.from_numpy(encoder.preprocess(obs))))
    for mode in encoder.model.latent_modes:
        decoded = encoder.decode(encoder.encode(obs, mode), mode)
        assert decoded.shape == (1, 1, 32, 32)
        if mode == "sample":  # a posterior sample decodes to a frame near, not at, the reconstruction
            assert 0.0 <= float(decoded.min()) and float(decoded.max()) <= 1.0
        else:
            torch.testing.assert_close(decoded, reconstruction, atol=1e-5, rtol=0)


def test_wrong_input_shape_and_dtype_are_explained(checkpoint: Path) -> None:
    encoder = vaerl.load_encoder(checkpoint, "cpu")
    with pytest.raises(ObservationError, match=r"\(N, 1, 32, 32\)"):
        encoder.encode_frames(np.zeros((2, 1, 16, 16), np.uint8))
    with pytest.raises(ObservationError, match="must be uint8"):
        encoder.encode_frames(np.zeros((2, 1, 32, 32), np.float32))
    with pytest.raises(ObservationError, match="expected a batch of images"):
        encoder.encode(np.zeros((2, 64, 64, 3), np.uint8))


def test_missing_checkpoint_says_how_to_make_one(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="scripts/pretrain_vae.py"):
        vaerl.load_encoder(tmp_path / "nope.safetensors")


def test_run_directory_is_accepted(checkpoint: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    (run / "encoder.safetensors").write_bytes(checkpoint.read_bytes())
    assert vaerl.load_encoder(run, "cpu").kind in ("vae", "vqvae")


@pytest.mark.parametrize("cut", [10, 200, -100])
def test_truncated_checkpoint_is_reported(checkpoint: Path, cut: int) -> None:
    data = checkpoint.read_bytes()
    checkpoint.write_bytes(data[:cut])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        load_model(checkpoint)


def test_foreign_safetensors_file_is_refused(tmp_path: Path) -> None:
    save_file({"w": torch.zeros(2)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(CheckpointError, match="not a vaerl encoder checkpoint"):
        load_model(tmp_path / "other.safetensors")


def _rewrite_metadata(path: Path, **changes: str) -> None:
    from safetensors import safe_open

    with safe_open(str(path), "pt") as handle:
        metadata = {**handle.metadata(), **changes}
    save_file(load_file(str(path)), str(path), metadata=metadata)


def test_newer_format_asks_to_upgrade(checkpoint: Path) -> None:
    _rewrite_metadata(checkpoint, format_version="99", vaerl_version="9.0.0")
    with pytest.raises(CheckpointError, match="upgrade vaerl"):
        read_checkpoint_info(checkpoint)


def test_unknown_model_kind_is_refused(checkpoint: Path) -> None:
    _rewrite_metadata(checkpoint, model_kind='"diffusion"')
    with pytest.raises(CheckpointError, match="'diffusion'"):
        load_model(checkpoint)


def test_wrong_kind_and_wrong_env_are_refused(checkpoint: Path) -> None:
    kind = read_checkpoint_info(checkpoint).kind
    other = "vqvae" if kind == "vae" else "vae"
    with pytest.raises(CheckpointError, match=f"not the requested '{other}'"):
        load_model(checkpoint, kind=other)
    with pytest.raises(CheckpointError, match="env.id='ALE/Pong-v5' here, 'vaerl/FakeFrames-v0' in pretraining"):
        vaerl.load_encoder(checkpoint, env_id="ALE/Pong-v5")


def test_weights_not_matching_metadata_are_refused(checkpoint: Path) -> None:
    info = read_checkpoint_info(checkpoint)
    config = dict(info.model_config)
    key = "latent_dim" if info.kind == "vae" else "embedding_dim"
    config[key] += 1
    _rewrite_metadata(checkpoint, model_config=json.dumps(config))
    with pytest.raises(CheckpointError, match="does not match"):
        load_model(checkpoint)


def test_save_is_atomic_and_keeps_the_old_file_on_failure(checkpoint: Path, monkeypatch) -> None:
    before = checkpoint.read_bytes()
    model, info = load_model(checkpoint)

    def explode(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr("vaerl.tensorfile.save_file", explode)
    with pytest.raises(OSError):
        save_checkpoint(checkpoint, model, info.spec, info.env)
    assert checkpoint.read_bytes() == before
    assert [p.name for p in checkpoint.parent.iterdir()] == [checkpoint.name]


def test_spec_override_feeds_another_env(checkpoint: Path) -> None:
    encoder = vaerl.load_encoder(checkpoint, "cpu", spec_override={"source_shape": (64, 64, 3)})
    frames = np.random.default_rng(0).integers(0, 255, (2, 64, 64, 3), dtype=np.uint8)
    assert encoder.encode(frames).shape[0] == 2


def test_env_differences_name_each_frame_setting_that_changed(fake_config) -> None:
    trained = json.loads(json.dumps({**fake_config.to_dict(), "size": (32, 32)}))  # as a checkpoint stores it
    assert env_differences(trained, {**fake_config.to_dict(), "size": (32, 32)}) == []  # a tuple equals its list
    other = {**fake_config.to_dict(), "size": (32, 32), "frame_skip": 2, "noop_max": 0}
    assert env_differences(trained, other) == ["env.frame_skip=2 here, 4 in pretraining"]  # noop_max: same frames
    assert env_differences(trained, other, settings=("id",)) == []
    assert env_differences(trained, "ALE/Pong-v5") == ["env.id='ALE/Pong-v5' here, 'vaerl/FakeFrames-v0' in pretraining"]


def test_check_encoder_env_raises_the_callers_error_with_its_fix(checkpoint: Path, fake_config) -> None:
    info = read_checkpoint_info(checkpoint)
    check_encoder_env(info, fake_config, where="enc", fix="")
    changed = dataclasses.replace(fake_config, grayscale=False)
    with pytest.raises(ValueError, match=r"enc was pretrained on other frames than this env: env.grayscale=False "
                                         r"here, True in pretraining. Retrain"):
        check_encoder_env(info, changed, where="enc", fix="Retrain", error=ValueError)


@pytest.mark.parametrize(("built_with", "added_since"), [
    ({"foreground_projections": False}, ["foreground_projections", "foreground_parts", "foreground_cells",
                                         "foreground_sums", "foreground_cell_kernel", "foreground_cells_signed"]),
    (SUMS, ["foreground_parts", "foreground_cells", "foreground_sums", "foreground_cell_kernel",
            "foreground_cells_signed"]),
    ({**SUMS, "foreground_parts": 2}, ["foreground_cells", "foreground_sums", "foreground_cell_kernel",
                                       "foreground_cells_signed"]),
])
def test_checkpoints_from_before_a_default_changed_build_what_they_were(
        tmp_path: Path, fake_config, built_with: dict, added_since: list[str]) -> None:
    """A VAE written before a setting existed stored no such key: it loads with the setting it was built with
    (no foreground path before the projections were the default, the row and column sums before the cells)."""
    env = make_env(fake_config)
    spec = preprocess_spec(fake_config, env)
    model = build_model("vae", input_shape=spec.input_shape, **built_with, **TINY_VAE).eval()
    path = save_checkpoint(tmp_path / "old.safetensors", model, spec, fake_config.to_dict())
    config = dict(read_checkpoint_info(path).model_config)
    for key in added_since:
        del config[key]
    _rewrite_metadata(path, model_config=json.dumps(config))
    loaded, _ = load_model(path)
    assert loaded.latent_dim() == model.latent_dim()
    assert loaded.describe_latent() == model.describe_latent() != build_model(
        "vae", input_shape=spec.input_shape, **TINY_VAE).describe_latent()
    x = torch.rand(2, *spec.input_shape)
    torch.testing.assert_close(loaded.encode_latent(x), model.encode_latent(x))


def test_an_encoder_from_before_a_default_changed_fine_tunes_in_the_policy(tmp_path: Path, fake_config) -> None:
    """A policy that trains the encoder rebuilds it from the settings it was built with, not from the checkpoint's
    stored keys: those lack later settings, whose defaults would build another model that its weights do not fit."""
    from gymnasium import spaces

    from agents.rl.features import load_pretrained
    from agents.rl.observations import FinetuneObservations
    env = make_env(fake_config)
    spec = preprocess_spec(fake_config, env)
    model = build_model("vae", input_shape=spec.input_shape, foreground_projections=False, **TINY_VAE).eval()
    path = save_checkpoint(tmp_path / "old.safetensors", model, spec, fake_config.to_dict())
    config = dict(read_checkpoint_info(path).model_config)
    del config["foreground_projections"]  # written before the foreground path existed: a plain VAE
    _rewrite_metadata(path, model_config=json.dumps(config))
    observations = FinetuneObservations(vaerl.load_encoder(path, "cpu"), stack=1)
    kwargs = observations.policy_kwargs()["features_extractor_kwargs"]
    extractor_class = observations.policy_kwargs()["features_extractor_class"]
    extractor = extractor_class(spaces.Box(0.0, 1.0, spec.input_shape), **kwargs)
    policy = torch.nn.Sequential(extractor)
    assert load_pretrained(policy, path) == 1
    x = torch.rand(2, *spec.input_shape)
    torch.testing.assert_close(extractor(x), model.encode_latent(x))


def test_foreground_parts_round_trip(tmp_path: Path, fake_config) -> None:
    """A VAE with learned foreground parts reloads with the same partition: identical latents, statistics included."""
    torch.manual_seed(0)
    env = make_env(fake_config)
    spec = preprocess_spec(fake_config, env)
    model = build_model("vae", input_shape=spec.input_shape, foreground_parts=3, **TINY_VAE).eval()
    with torch.no_grad():  # a partition unlike the even split a fresh model starts from
        torch.nn.init.normal_(model.object_encoder.part_net[-1].weight)
        model.object_encoder.part_prior.normal_()
    loaded, _ = load_model(save_checkpoint(tmp_path / "parts.safetensors", model, spec, fake_config.to_dict()))
    x = torch.rand(2, *spec.input_shape)
    latent = loaded.encode_latent(x)
    assert latent.shape == (2, model.latent_dim()) and loaded.object_encoder.num_parts == 3
    torch.testing.assert_close(latent, model.encode_latent(x))
