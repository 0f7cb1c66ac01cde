"""VAE and VQ-VAE: shapes, gradients, losses and the codebook mechanics."""

from __future__ import annotations

import math

import gymnasium as gym
import numpy as np
import pytest
import torch
from conftest import REPO, SUMS, TINY_VAE, TINY_VQVAE
from omegaconf import OmegaConf
from torch.distributions import Normal, kl_divergence

from vaerl.errors import ConfigError
from vaerl.models import VAE, VQVAE, VectorQuantizer, build_model
from vaerl.models.vae import VAEConfig, gaussian_kl
from vaerl.models.vqvae import perplexity_of


@pytest.mark.parametrize("shape", [(1, 84, 84), (3, 64, 64), (4, 84, 84), (1, 50, 70)])
@pytest.mark.parametrize("kind", ["vae", "vqvae"])
def test_shapes_round_trip_any_input_size(kind: str, shape: tuple[int, int, int]) -> None:
    model = build_model(kind, input_shape=shape)
    x = torch.rand(2, *shape)
    out = model.training_loss(x)
    assert out.recon.shape == x.shape
    assert 0.0 <= out.recon.min().item() and out.recon.max().item() <= 1.0
    assert model.features(x).shape == (2, model.feature_dim)
    assert torch.isfinite(out.loss)


def test_vae_default_is_a_half_width_nature_encoder_with_a_wider_decoder() -> None:
    model = build_model("vae", input_shape=(1, 84, 84))
    # z (32) then the foreground summed over 14 x 14 cells: the latent agents get stays within 256
    assert model.grid_shape == (32, 7, 7) and model.feature_dim == 32 + 14 * 14 <= 256
    assert model.describe_latent() == "32-d + 14x14 tent signed foreground cells"
    assert [conv.out_channels for conv in model.trunk.net if isinstance(conv, torch.nn.Conv2d)] == [16, 32, 32]
    assert model.dec_grid == (64, 7, 7)  # the decoder starts from NatureCNN's width
    assert model.reconstruct(torch.rand(2, 1, 84, 84)).shape == (2, 1, 84, 84)


def test_default_vae_config_file_matches_the_dataclass_defaults() -> None:
    file = OmegaConf.to_container(OmegaConf.load(REPO / "configs/model/vae.yaml"))
    defaults = VAEConfig()
    assert {k: v for k, v in file.items() if k != "kind"} == {
        k: getattr(defaults, k) for k in file if k != "kind"}


def test_kl_matches_torch_distributions() -> None:
    mu, logvar = torch.randn(5, 3), torch.randn(5, 3)
    expected = kl_divergence(Normal(mu, torch.exp(0.5 * logvar)), Normal(0.0, 1.0))
    torch.testing.assert_close(gaussian_kl(mu, logvar), expected)


def test_reparameterised_gradient_reaches_encoder() -> None:
    model: VAE = build_model("vae", input_shape=(1, 32, 32), **TINY_VAE)
    model.training_loss(torch.rand(4, 1, 32, 32)).loss.backward()
    assert model.trunk.net[0].weight.grad.abs().sum() > 0
    assert model.to_posterior.weight.grad.abs().sum() > 0


def test_straight_through_gradient_reaches_encoder() -> None:
    model: VQVAE = build_model("vqvae", input_shape=(1, 32, 32), **TINY_VQVAE)
    model.training_loss(torch.rand(4, 1, 32, 32)).loss.backward()
    first_conv = model.encoder[0].net[0]
    assert first_conv.weight.grad is not None and first_conv.weight.grad.abs().sum() > 0


def test_straight_through_forward_equals_codes_and_lookup() -> None:
    quantizer = VectorQuantizer(8, 3, ema=False).eval()
    z_e = torch.randn(2, 3, 4, 4, requires_grad=True)
    out = quantizer(z_e)
    torch.testing.assert_close(out.quantized, quantizer.lookup(out.indices))
    out.quantized.sum().backward()
    torch.testing.assert_close(z_e.grad, torch.ones_like(z_e))  # identity gradient


def test_codebook_loss_trains_codebook_without_ema() -> None:
    model: VQVAE = build_model("vqvae", input_shape=(1, 32, 32), ema=False, **TINY_VQVAE)
    model.training_loss(torch.rand(4, 1, 32, 32)).loss.backward()
    assert model.quantizer.codebook.grad is not None and model.quantizer.codebook.grad.abs().sum() > 0


def test_ema_moves_assigned_code_toward_its_vectors() -> None:
    quantizer = VectorQuantizer(2, 2, ema=True, decay=0.5, dead_code_threshold=0.0)
    quantizer.codebook.data = torch.tensor([[0.0, 0.0], [10.0, 10.0]])
    quantizer.embed_sum.copy_(quantizer.codebook.data)
    target = torch.tensor([1.0, 1.0])
    z_e = target.view(1, 2, 1, 1).expand(1, 2, 3, 3).contiguous()
    quantizer.train()
    for _ in range(10):
        quantizer(z_e)
    assert torch.allclose(quantizer.codebook[0], target, atol=1e-2)
    # an unused code only drifts by the Laplace smoothing of its (decayed) count
    torch.testing.assert_close(quantizer.codebook[1], torch.tensor([10.0, 10.0]), atol=0.5, rtol=0)


def test_dead_codes_restart_on_encoder_outputs() -> None:
    quantizer = VectorQuantizer(4, 2, ema=True, decay=0.5, dead_code_threshold=0.9)
    quantizer.codebook.data = torch.tensor([[0.0, 0.0], [50.0, 50.0], [60.0, 60.0], [70.0, 70.0]])
    quantizer.embed_sum.copy_(quantizer.codebook.data)
    z_e = torch.randn(1, 2, 4, 4) * 0.1
    quantizer.train()
    quantizer(z_e)  # only code 0 is used; the far codes decay below the threshold and restart
    flat = z_e.permute(0, 2, 3, 1).reshape(-1, 2)
    for code in quantizer.codebook[1:]:
        assert torch.cdist(code[None], flat).min() < 1e-6  # each restarted code is one of the encoder outputs


def test_kmeans_init_spreads_codes_over_the_data() -> None:
    quantizer = VectorQuantizer(2, 1, ema=True, kmeans_init=True, dead_code_threshold=0.0).train()
    values = torch.cat([torch.full((8,), -5.0), torch.full((8,), 5.0)])
    quantizer(values.view(1, 1, 4, 4))
    assert sorted(quantizer.codebook.flatten().tolist()) == pytest.approx([-5.0, 5.0], abs=1e-3)


def test_perplexity_of_known_assignments() -> None:
    assert float(perplexity_of(torch.tensor([0, 1, 2, 3]), 8)) == pytest.approx(4.0)
    assert float(perplexity_of(torch.tensor([5, 5, 5]), 8)) == pytest.approx(1.0)
    two_to_one = torch.tensor([0, 0, 1])
    entropy = -(2 / 3 * math.log(2 / 3) + 1 / 3 * math.log(1 / 3))
    assert float(perplexity_of(two_to_one, 8)) == pytest.approx(math.exp(entropy))


@pytest.mark.parametrize("kind,kwargs", [("vae", TINY_VAE), ("vqvae", TINY_VQVAE)])
def test_loss_decreases_on_fixed_seed(kind: str, kwargs: dict, fake_dataset) -> None:
    torch.manual_seed(0)
    model = build_model(kind, input_shape=(1, 32, 32), **kwargs)
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)
    x = torch.from_numpy(fake_dataset.frames(slice(0, 64))).float() / 255
    losses = []
    for _ in range(40):
        out = model.training_loss(x)
        optimizer.zero_grad()
        out.loss.backward()
        optimizer.step()
        losses.append(out.loss.item())
    assert losses[-1] < 0.7 * losses[0]


def test_vae_reports_unweighted_elbo_and_bits_per_dim() -> None:
    model: VAE = build_model("vae", input_shape=(1, 16, 16), encoder_layers=[[4, 4, 2, 1]], hidden_dim=8,
                             latent_dim=2, likelihood="gaussian", sigma=0.5)
    x = torch.rand(3, 1, 16, 16)
    weighted = model.training_loss(x, pixel_weights=torch.full_like(x, 10.0))
    m = weighted.metrics
    assert float(m["elbo"]) == pytest.approx(-(float(m["recon_nll"]) + float(m["kl"])), rel=1e-5)
    assert float(m["bits_per_dim"]) == pytest.approx(-float(m["elbo"]) / (256 * math.log(2)) + 8.0, rel=1e-5)
    assert float(weighted.loss.detach()) > float(m["recon_nll"])  # the weights act on the optimised loss only


def test_free_bits_and_warmup_shape_the_kl_term() -> None:
    model: VAE = build_model("vae", input_shape=(1, 16, 16), encoder_layers=[[4, 4, 2, 1]], hidden_dim=8,
                             latent_dim=2, free_bits=5.0, kl_warmup_steps=100)
    assert model.kl_weight(0) == 0.0 and model.kl_weight(50) == 0.5 and model.kl_weight(500) == 1.0
    torch.manual_seed(0)
    x = torch.rand(3, 1, 16, 16)
    with torch.no_grad():
        torch.manual_seed(1)  # the same posterior samples in both calls
        loss_free = model.training_loss(x, step=100).loss
        torch.manual_seed(1)
        model.config.free_bits = 0.0
        plain = model.training_loss(x, step=100)
    kl = float(plain.metrics["kl"])
    assert kl < 5.0  # so each of the 2 dimensions is under its floor...
    # ...and each counts as 5 nats: the clamp is per dimension (clamping the sum to 5 would add 5 - kl)
    assert float(loss_free - plain.loss) == pytest.approx(2 * 5.0 - kl, rel=1e-4)


def test_object_dropout_hides_the_objects_of_some_training_frames_from_the_decoder() -> None:
    torch.manual_seed(0)
    model: VAE = build_model("vae", input_shape=(1, 28, 28), **TINY_VAE, foreground_cells=7, object_dropout=0.5)
    model.set_background(torch.zeros(1, 28, 28))
    x = torch.zeros(64, 1, 28, 28)
    x[torch.arange(64), 0, torch.randint(0, 28, (64,)), torch.randint(0, 28, (64,))] = 1.0  # one bright pixel each
    z = torch.randn(64, 4)
    objects = model.encode_objects(x)
    empty = model.encode_objects(torch.zeros_like(x))  # an empty scene's cells: all zero
    with torch.no_grad():
        shown = model.objects_shown(64)
        assert shown is not None and 16 < int(shown.sum()) < 48  # about half, drawn anew per batch
        mixed = model.decode_logits(z, objects, shown)
        hidden = shown == 0
        torch.testing.assert_close(mixed[hidden], model.decode_logits(z, empty)[hidden])
        torch.testing.assert_close(mixed[~hidden], model.decode_logits(z, objects)[~hidden])
        assert not torch.allclose(model.decode_logits(z, objects), model.decode_logits(z, empty))
        model.eval()  # evaluation and the latent never drop anything
        assert model.objects_shown(64) is None
        assert model.encode_latent(x).shape == (64, 4 + 7 * 7)


def test_object_dropout_needs_a_fraction_and_an_object_path() -> None:
    with pytest.raises(ConfigError, match="0 <= object_dropout < 1, got 1"):
        build_model("vae", object_dropout=1.0)
    with pytest.raises(ConfigError, match="has none; set foreground_projections=true or object_dropout=0"):
        build_model("vae", foreground_projections=False, object_dropout=0.5)


def test_samples_and_reconstructions_are_decoder_means() -> None:
    model: VAE = build_model("vae", input_shape=(1, 16, 16), encoder_layers=[[4, 4, 2, 1]], hidden_dim=8, latent_dim=2,
                             foreground_projections=False)
    model.eval()
    x = torch.rand(2, 1, 16, 16)
    with torch.no_grad():
        mu, _ = model.encode(x)  # the reconstruction: Bernoulli means at the posterior mean, not a draw from either
        torch.testing.assert_close(model.reconstruct(x), torch.sigmoid(model.decode_logits(mu)))
        z = torch.randn(3, 2, generator=torch.Generator().manual_seed(1))  # samples: Bernoulli means at prior draws
        torch.testing.assert_close(model.sample(3, torch.Generator().manual_seed(1)),
                                   torch.sigmoid(model.decode_logits(z)))


def test_unknown_model_kwarg_is_named() -> None:
    with pytest.raises(ConfigError, match="latnt_dim.*Did you mean 'latent_dim'"):
        build_model("vae", latnt_dim=3)
    with pytest.raises(ConfigError, match="unknown model kind 'gan'"):
        build_model("gan")


# ---------------------------------------------------------------------------------------------- the latent contract
@pytest.mark.parametrize("kind,kwargs", [("vae", TINY_VAE), ("vqvae", TINY_VQVAE)])
def test_every_latent_mode_lies_in_its_space_and_decodes_to_frames(kind: str, kwargs: dict) -> None:
    model = build_model(kind, input_shape=(1, 32, 32), **kwargs).eval()
    x = torch.rand(3, 1, 32, 32)
    with torch.no_grad():
        reconstruction = model.reconstruct(x)
        for mode in model.latent_modes:
            z = model.encode_latent(x, mode, generator=torch.Generator().manual_seed(0))
            assert z.shape == (3, model.latent_dim(mode))
            assert all(row in model.latent_space(mode) for row in z.numpy().astype(model.latent_space(mode).dtype))
            decoded = model.decode_latent(z, mode)
            assert decoded.shape == x.shape
            if mode != "sample":  # the mean latent and the code indices both decode to the reconstruction
                torch.testing.assert_close(decoded, reconstruction, atol=1e-5, rtol=0)


def test_vae_sample_mode_draws_from_the_posterior_with_the_given_generator() -> None:
    model = build_model("vae", input_shape=(1, 32, 32), **TINY_VAE).eval()
    x = torch.rand(2, 1, 32, 32)
    with torch.no_grad():
        mu, logvar = model.encode(x)
        eps = torch.randn(mu.shape, generator=torch.Generator().manual_seed(7))
        z, cells = model.encode_latent(x, "sample", generator=torch.Generator().manual_seed(7)).split([4, 14 * 14], 1)
    torch.testing.assert_close(z, mu + eps * torch.exp(0.5 * logvar))
    assert not torch.allclose(z, mu)
    # the foreground cells are deterministic: the same as in the mean latent
    torch.testing.assert_close(cells, model.encode_latent(x)[:, 4:])


def test_vqvae_sample_mode_is_its_deterministic_mean() -> None:
    model = build_model("vqvae", input_shape=(1, 32, 32), **TINY_VQVAE).eval()
    x = torch.rand(2, 1, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(model.encode_latent(x, "sample"), model.encode_latent(x, "mean"))


def test_latent_spaces_and_descriptions_follow_the_architecture() -> None:
    vae = build_model("vae", input_shape=(1, 32, 32), **TINY_VAE)
    vq = build_model("vqvae", input_shape=(1, 32, 32), **TINY_VQVAE)  # two stride-2 layers: an 8x8 grid
    sums = build_model("vae", input_shape=(1, 32, 32), **TINY_VAE, **SUMS)
    assert vae.latent_space("sample") == gym.spaces.Box(-np.inf, np.inf, (4 + 14 * 14,), np.float32)
    assert sums.latent_space("sample") == gym.spaces.Box(-np.inf, np.inf, (4 + 32 + 32,), np.float32)
    assert vq.latent_shape("mean") == (4, 8, 8) and vq.latent_shape("indices") == (8, 8)
    assert vq.latent_space("indices") == gym.spaces.MultiDiscrete(np.full(64, 16))
    assert (vae.describe_latent(), vq.describe_latent()) == ("4-d + 14x14 tent signed foreground cells", "8x8x4 grid")
    assert sums.describe_latent() == "4-d + 1x(32+32) foreground projections"
    assert build_model("vae", input_shape=(1, 32, 32), foreground_projections=False, **TINY_VAE).describe_latent() == "4-d"
    assert vae.input_shape == vq.input_shape == (1, 32, 32)
    torch.testing.assert_close(vq.codebook, vq.quantizer.codebook)


def test_modes_a_family_does_not_offer_are_refused_by_name() -> None:
    vae = build_model("vae", input_shape=(1, 32, 32), **TINY_VAE)
    with pytest.raises(ValueError, match="not offered by a vae encoder; it offers mean, sample"):
        vae.encode_latent(torch.rand(1, 1, 32, 32), "indices")
    with pytest.raises(ValueError, match="mode must be one of"):
        vae.latent_dim("median")
    with pytest.raises(NotImplementedError, match="no codebook"):
        vae.codebook  # noqa: B018


def test_prior_samples_or_a_clear_refusal() -> None:
    vae = build_model("vae", input_shape=(1, 32, 32), **TINY_VAE)
    samples = vae.sample_prior(5, generator=torch.Generator().manual_seed(0))
    assert vae.can_sample_prior and samples.shape == (5, 1, 32, 32)
    torch.testing.assert_close(samples, vae.sample_prior(5, generator=torch.Generator().manual_seed(0)))
    vq = build_model("vqvae", input_shape=(1, 32, 32), **TINY_VQVAE)
    assert not vq.can_sample_prior
    with pytest.raises(NotImplementedError, match="fit_prior"):
        vq.sample_prior(5)


def test_vae_traversal_axes_put_the_dimensions_with_most_kl_first() -> None:
    model = build_model("vae", input_shape=(1, 32, 32), **TINY_VAE).eval()
    x = torch.rand(8, 1, 32, 32)
    axes = model.latent_axes(x, limit=3)
    kl = model.kl_per_dimension(x)
    assert axes.dims == torch.argsort(kl, descending=True)[:3].tolist()
    assert axes.details["kl"] == sorted(axes.details["kl"], reverse=True)
    latent = torch.zeros(4 + 14 * 14)  # z, then the foreground cells, which traversals leave alone
    expected = torch.zeros(2, 4 + 14 * 14)
    expected[:, 2] = torch.tensor([-1.0, 1.0])
    torch.testing.assert_close(model.traverse(latent, 2, torch.tensor([-1.0, 1.0])), expected)


def test_a_frame_stack_that_does_not_divide_the_input_channels_is_refused() -> None:
    assert build_model("vae", input_shape=(2, 28, 28), frame_stack=2, **TINY_VAE).frame_channels == 1
    with pytest.raises(ValueError, match="frame_stack must be >= 1 and divide the input's 3 channels, got 2"):
        build_model("vae", input_shape=(3, 28, 28), frame_stack=2, **TINY_VAE)
