"""The PixelCNN prior: causal masks, autoregressive sampling, likelihood in bits, safe save/load."""

import math

import pytest
import torch
from safetensors import safe_open

from vaerl.errors import CheckpointError
from vaerl.models.pixelcnn import (
    MaskedConv2d,
    PixelCNNConfig,
    PixelCNNPrior,
    causal_mask,
    codebook_fingerprint,
    load_prior,
    mean_nll_bits,
    save_prior,
    train_prior,
)

pytestmark = pytest.mark.usefixtures("one_thread")


def _raster_later(height, width, i, j, inclusive):
    """Boolean (H, W) mask of the positions after (i, j) in raster order (and (i, j) itself if inclusive)."""
    order = torch.arange(height * width).view(height, width)
    return order >= i * width + j if inclusive else order > i * width + j


# ---------------------------------------------------------------------------------------------- masks
def test_masks_hide_the_future():
    assert causal_mask((3, 3), "A", "full").tolist() == [[1, 1, 1], [1, 0, 0], [0, 0, 0]]
    assert causal_mask((3, 3), "B", "full").tolist() == [[1, 1, 1], [1, 1, 0], [0, 0, 0]]
    assert causal_mask((3, 3), "A", "vertical").tolist() == [[1, 1, 1], [0, 0, 0], [0, 0, 0]]
    assert causal_mask((1, 5), "B", "horizontal").tolist() == [[1, 1, 1, 0, 0]]
    with pytest.raises(ValueError, match="odd"):
        causal_mask((2, 3), "A", "full")


@pytest.mark.parametrize("mask_type", ["A", "B"])
def test_masked_convolution_is_causal(mask_type):
    torch.manual_seed(0)
    conv = MaskedConv2d(2, 3, 5, mask_type)
    x = torch.randn(1, 2, 6, 7)
    out = conv(x)
    for i, j in [(0, 0), (2, 3), (5, 6), (3, 0)]:
        # type A: the output at (i, j) ignores (i, j) and everything after; type B: everything after
        changed = x.clone()
        later = _raster_later(6, 7, i, j, inclusive=mask_type == "A")
        changed[:, :, later] = torch.randn_like(changed[:, :, later])
        assert torch.allclose(conv(changed)[..., i, j], out[..., i, j], atol=1e-6)
    # and it does see the position just before
    changed = x.clone()
    changed[:, :, 2, 2] += 1.0
    assert not torch.allclose(conv(changed)[..., 2, 3], out[..., 2, 3])


# ---------------------------------------------------------------------------------------------- the prior
def _prior(num_codes=8, grid=(4, 5), channels=16, layers=3):
    torch.manual_seed(0)
    return PixelCNNPrior(PixelCNNConfig(num_codes, grid, channels, layers))


def test_prior_logits_depend_only_on_earlier_positions():
    prior = _prior()
    grid = torch.randint(0, 8, (2, 4, 5))
    logits = prior(grid)
    for i in range(4):
        for j in range(5):
            changed = grid.clone()
            later = _raster_later(4, 5, i, j, inclusive=True)
            changed[:, later] = torch.randint(0, 8, (2, int(later.sum())))
            assert torch.allclose(prior(changed)[:, :, i, j], logits[:, :, i, j], atol=1e-5), (i, j)


def test_gated_stacks_have_no_blind_spot():
    # the original PixelCNN cannot see the up-right neighbour; the vertical stack of the gated one does
    prior = _prior(layers=2)
    grid = torch.randint(0, 8, (1, 4, 5))
    changed = grid.clone()
    changed[0, 1, 4] = (changed[0, 1, 4] + 1) % 8
    assert not torch.allclose(prior(changed)[:, :, 2, 2], prior(grid)[:, :, 2, 2])


def test_sampling_yields_valid_indices_of_the_right_shape():
    prior = _prior(num_codes=5)
    samples = prior.sample(6, grid_size=(3, 7), generator=torch.Generator().manual_seed(0))
    assert samples.shape == (6, 3, 7) and samples.dtype == torch.long
    assert int(samples.min()) >= 0 and int(samples.max()) < 5
    again = prior.sample(6, grid_size=(3, 7), generator=torch.Generator().manual_seed(0))
    assert torch.equal(samples, again)


def test_sampling_follows_a_learned_autoregressive_rule():
    # every grid counts up from a random start: c[p] = (c[0] + p) mod K in raster order. Only a sampler
    # that draws position p after (and conditioned on) p - 1 can reproduce the rule.
    k, height, width = 6, 3, 3
    start = torch.randint(0, k, (512, 1), generator=torch.Generator().manual_seed(0))
    data = ((start + torch.arange(height * width)) % k).view(-1, height, width)
    prior = _prior(num_codes=k, grid=(height, width), channels=16, layers=3)
    training = train_prior(prior, data[:448], data[448:], steps=100, batch_size=32, lr=1e-2, eval_every=50)
    assert training.best_val_bits < 0.6  # only the first position is uncertain: log2(6) / 9 = 0.29 bits
    samples = prior.sample(32, generator=torch.Generator().manual_seed(1)).view(32, -1)
    follows = (samples[:, 1:] == (samples[:, :-1] + 1) % k).float().mean()
    assert follows > 0.95
    # the rule's grids are likely, shuffled ones are not
    shuffled = data[448:].view(-1, height * width)[:, torch.randperm(height * width)].view(-1, height, width)
    assert mean_nll_bits(prior, shuffled) > 4 * mean_nll_bits(prior, data[448:])


def test_untrained_prior_costs_about_log2_of_the_codebook_per_code():
    prior = _prior(num_codes=16)
    with torch.no_grad():
        bits = prior.nll_bits(torch.randint(0, 16, (8, 4, 5)))
    assert bits.shape == (8,)
    assert abs(float(bits.mean()) - math.log2(16)) < 0.5


def test_out_of_range_indices_are_rejected():
    with pytest.raises(ValueError, match=r"\[0, 8\)"):
        _prior()(torch.full((1, 4, 5), 8))


# ---------------------------------------------------------------------------------------------- save / load
def test_save_load_round_trip_is_safetensors_and_checks_the_codebook(tmp_path):
    prior = _prior()
    codebook = codebook_fingerprint(torch.randn(8, 4))
    path = save_prior(tmp_path / "prior.safetensors", prior, codebook=codebook, metrics={"test_bits_per_code": 1.5})
    with safe_open(str(path), framework="pt") as handle:  # plain tensors + JSON metadata, no pickle
        assert handle.metadata()["format"] == "vaerl-pixelcnn-prior"
    loaded, meta = load_prior(path, codebook=codebook)
    grid = torch.randint(0, 8, (2, 4, 5))
    assert torch.equal(loaded(grid), prior.eval()(grid))
    assert meta["metrics"]["test_bits_per_code"] == 1.5 and loaded.config == prior.config
    with pytest.raises(CheckpointError, match="another codebook"):
        load_prior(path, codebook=codebook_fingerprint(torch.randn(8, 4)))
    (tmp_path / "broken.safetensors").write_bytes(path.read_bytes()[:100])
    with pytest.raises(CheckpointError, match="corrupt"):
        load_prior(tmp_path / "broken.safetensors")
