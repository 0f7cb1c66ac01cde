"""The temporal contrastive term beside the ELBO: its loss on known cases, pairs of frames, and pretraining with it."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import TINY_VAE
from test_pretrain import tiny_config

import vaerl
from vaerl.data import BatchLoader, FrameDataset
from vaerl.errors import DatasetError
from vaerl.models import build_model
from vaerl.models.contrast import GlobalLocalContrast, standardise
from vaerl.training import pretrain


def ball_maps(places: torch.Tensor, grid: int = 5) -> torch.Tensor:
    """One-channel feature maps ``(B, 1, grid, grid)``: a ball at each flat place, nothing elsewhere."""
    maps = torch.zeros(len(places), 1, grid * grid)
    maps[torch.arange(len(places)), 0, places] = 1.0
    return maps.view(-1, 1, grid, grid)


def fit(term: GlobalLocalContrast, latent_of: callable, steps: int = 300, batch: int = 16) -> float:
    """Train ``term`` on fresh batches (a ball at another place of a 5 x 5 map in each frame); its final loss."""
    optimizer = torch.optim.Adam(term.parameters(), lr=0.05)
    losses = []
    for _ in range(steps):
        places = torch.randperm(25)[:batch]
        loss, _ = term(latent_of(places), ball_maps(places))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return float(np.mean(losses[-50:]))


def test_a_latent_that_says_nothing_scores_log_batch() -> None:
    term = GlobalLocalContrast(3, (2, 4, 4))
    torch.nn.init.zeros_(term.predict.weight)
    torch.nn.init.zeros_(term.predict.bias)
    loss, accuracy = term(torch.randn(16, 3), torch.randn(16, 2, 4, 4))
    assert loss.item() == pytest.approx(math.log(16))
    assert 0.0 <= accuracy.item() <= 1.0


def test_a_latent_that_knows_where_the_ball_is_picks_out_its_partner() -> None:
    """At each place the partner is the frame with the ball there, or one of the frames alike without it. A latent
    that says where its ball is (one number per place) gets close to the best loss there is; one that says where
    another frame's ball is learns nothing, for the batches are drawn afresh."""
    one_hot = torch.eye(25)
    knowing = fit(GlobalLocalContrast(25, (1, 5, 5)), lambda places: one_hot[places])
    ignorant = fit(GlobalLocalContrast(25, (1, 5, 5)), lambda places: one_hot[torch.randperm(25)[:len(places)]])
    # 16 frames, balls at 16 of 25 places: the places without a ball tell no frame apart (log 16); at a ball's
    # place its own latent finds its frame and the other 15 cannot tell the rest apart (log 15)
    best = 9 / 25 * math.log(16) + 16 / 25 * 15 / 16 * math.log(15)
    assert knowing < best + 0.05
    assert ignorant > math.log(16) - 0.05


def test_a_latent_too_flat_for_agents_to_read_scores_worse() -> None:
    """Agents divide each Gaussian mean by its spread, but by no less than 0.1: a latent that varies less than that
    reaches them flattened. The term reads it the same way (a floor, and a predictor with unit rows that cannot
    scale it back up), so only a latent that spreads to the floor wins it."""
    one_hot = torch.eye(25)
    term = GlobalLocalContrast(25, (1, 5, 5))
    fit(term, lambda places: one_hot[places])
    places = torch.randperm(25)[:16]
    with torch.no_grad():
        readable = term(one_hot[places] * 0.5, ball_maps(places))[0]
        flat = term(one_hot[places] * 0.005, ball_maps(places))[0]
    best = 9 / 25 * math.log(16) + 16 / 25 * 15 / 16 * math.log(15)  # as in the test above
    assert readable < best + 0.05
    assert flat > math.log(16) - 0.05  # no better than a latent that says nothing


def test_standardise_leaves_what_every_frame_shares_at_zero() -> None:
    values = torch.tensor([[1.0, 5.0], [3.0, 5.0], [5.0, 5.0]])
    out = standardise(values)
    torch.testing.assert_close(out[:, 1], torch.zeros(3))
    torch.testing.assert_close(out[:, 0], torch.tensor([-1.0, 0.0, 1.0]) * math.sqrt(1.5), atol=1e-4, rtol=1e-4)


def test_maps_of_another_shape_are_refused() -> None:
    with pytest.raises(ValueError, match="do not fit"):
        GlobalLocalContrast(3, (2, 4, 4))(torch.randn(4, 3), torch.randn(4, 2, 5, 5))


def test_the_vae_contrasts_paired_frames_and_skips_unpaired_ones() -> None:
    model = build_model("vae", input_shape=(1, 32, 32), **TINY_VAE, contrast_weight=1.0, contrast_offset=1)
    assert model.pair_offset == 1
    x = torch.rand(8, 1, 32, 32)
    paired = model.training_loss(x, paired=True)
    alone = model.training_loss(x)  # validation frames have no partners: the ELBO alone
    assert {"contrast_nll", "contrast_accuracy"} <= set(paired.metrics)
    assert "contrast_nll" not in alone.metrics
    # the term joins the loss at its weight (same posterior samples in both calls)
    half = build_model("vae", input_shape=(1, 32, 32), **TINY_VAE, contrast_weight=0.5, contrast_offset=1)
    torch.manual_seed(1)
    paired = half.training_loss(x, paired=True)
    torch.manual_seed(1)
    alone = half.training_loss(x)
    assert float((paired.loss - alone.loss).detach()) == pytest.approx(0.5 * float(paired.metrics["contrast_nll"]), rel=1e-3)
    # a frame contrasted with itself needs no partner
    itself = build_model("vae", input_shape=(1, 32, 32), **TINY_VAE, contrast_weight=1.0)  # offset 0, the default
    assert itself.pair_offset == 0 and "contrast_nll" in itself.training_loss(x).metrics
    assert build_model("vae", input_shape=(1, 32, 32), **TINY_VAE).pair_offset == 0  # off by default


def test_an_earlier_layer_gives_finer_places_to_pick_the_partner_by() -> None:
    # TINY_VAE's two conv layers: 8 channels at 16 x 16, then 16 at 8 x 8
    first = build_model("vae", input_shape=(1, 32, 32), **TINY_VAE, contrast_weight=1.0, contrast_layer=0)
    last = build_model("vae", input_shape=(1, 32, 32), **TINY_VAE, contrast_weight=1.0)
    assert first.contrast.map_shape == (8, 16, 16) and last.contrast.map_shape == (16, 8, 8)
    x = torch.rand(4, 1, 32, 32)
    assert first.trunk.up_to(x, 0).shape == (4, 8, 16, 16)
    torch.testing.assert_close(last.trunk.up_to(x, 1), last.trunk(x))
    assert torch.isfinite(first.training_loss(torch.rand(8, 1, 32, 32), paired=True).metrics["contrast_nll"])


@pytest.mark.parametrize(("setting", "match"), [({"contrast_weight": -1.0}, "contrast_weight must be >= 0"),
                                                ({"contrast_offset": -1}, "contrast_offset must be >= 0"),
                                                ({"contrast_layer": 2}, "contrast_layer must name one of the 2")])
def test_bad_contrast_settings_are_named(setting: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        build_model("vae", input_shape=(1, 32, 32), **TINY_VAE, **setting)


def test_loader_pairs_each_frame_with_the_one_k_steps_later_in_its_episode(fake_dataset: FrameDataset) -> None:
    indices = np.arange(len(fake_dataset))
    loader = BatchLoader(fake_dataset, indices, batch_size=16, seed=0, pair_offset=3)
    try:
        picks = loader._draw()
        batch = next(loader).frames
    finally:
        loader.close()
    anchors, partners = picks[:8], picks[8:]
    np.testing.assert_array_equal(partners, anchors + 3)
    np.testing.assert_array_equal(fake_dataset.episodes[partners], fake_dataset.episodes[anchors])
    assert batch.shape == (16, 1, 32, 32)


def test_loader_without_pairs_names_the_fix(fake_dataset: FrameDataset) -> None:
    longest = np.unique(fake_dataset.episodes, return_counts=True)[1].max()
    with pytest.raises(DatasetError, match="contrast_offset"):
        BatchLoader(fake_dataset, np.arange(len(fake_dataset)), batch_size=16, pair_offset=int(longest))
    with pytest.raises(ValueError, match="even batch size"):
        BatchLoader(fake_dataset, np.arange(len(fake_dataset)), batch_size=15, pair_offset=1)


def test_pretraining_with_the_term_logs_it_and_reloads(tmp_path: Path) -> None:
    cfg = tiny_config(tmp_path, steps=10)
    cfg.model.update(contrast_weight=1.0, contrast_offset=1)  # the next frame: the loader draws pairs
    metrics = pretrain(cfg)
    assert metrics["completed"]
    encoder = vaerl.load_encoder(tmp_path / "run", "cpu")
    assert encoder.model.config.contrast_weight == 1.0 and encoder.model.contrast is not None
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(tmp_path / "run" / "tb"))
    events.Reload()
    nll = [event.value for event in events.Scalars("train/contrast_nll")]
    # batches of 8 frames are 4 pairs: a term that knows nothing scores log 4, one that guesses wrong more
    assert len(nll) == 5 and all(0.0 < value < 2 * math.log(4) for value in nll)
    assert "contrast_nll" not in metrics["val"]  # validation frames come alone: the ELBO alone
