"""The inverse-dynamics term beside the ELBO: its loss on known cases, batches with actions, and pretraining with it."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import TINY_VAE, fake_env_config
from test_pretrain import tiny_config

from vaerl.checkpoint import load_model
from vaerl.data import BatchLoader, FrameDataset, collect_frames
from vaerl.envs import make_env, preprocess_spec
from vaerl.errors import ConfigError, DatasetError
from vaerl.models import build_model
from vaerl.models.blocks import to_unit
from vaerl.models.dynamics import InverseDynamics
from vaerl.training import pretrain


def steps_of_a_paddle(batch: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Paddle places in [-1, 1] and the actions (0 left, 1 stay, 2 right) that move each one step of 0.2."""
    places = torch.rand(batch, generator=generator) * 1.6 - 0.8
    actions = torch.randint(0, 3, (batch,), generator=generator)
    return places, actions


def fit(term: InverseDynamics, latents_of: callable, steps: int = 400, batch: int = 64) -> tuple[float, float]:
    """Train ``term`` on fresh batches of paddle steps; its mean loss and accuracy over the last 50."""
    generator = torch.Generator().manual_seed(0)
    optimizer = torch.optim.Adam(term.parameters(), lr=0.05)
    losses, accuracies = [], []
    for _ in range(steps):
        places, actions = steps_of_a_paddle(batch, generator)
        latents, next_latents = latents_of(places, places + 0.2 * (actions - 1).float())
        loss, accuracy = term(latents, next_latents, actions)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
        accuracies.append(accuracy.item())
    return float(np.mean(losses[-50:])), float(np.mean(accuracies[-50:]))


def test_a_latent_that_says_nothing_scores_log_actions() -> None:
    term = InverseDynamics(3, 4)
    torch.nn.init.zeros_(term.predict.bias)
    with torch.no_grad():
        term.predict.weight.copy_(torch.ones(4, 6))  # every action scored alike
    loss, accuracy = term(torch.randn(16, 3), torch.randn(16, 3), torch.randint(0, 4, (16,)))
    assert loss.item() == pytest.approx(math.log(4))
    assert 0.0 <= accuracy.item() <= 1.0


def test_a_latent_that_knows_the_paddle_tells_the_actions_apart() -> None:
    """Two latents that hold the paddle's place (and noise) tell left, stay and right apart from the change of
    place; latents that hold places of other paddles cannot, and stay at chance (log 3 nats, a third right). With
    unit rows over standardised latents the scores are bounded, so even the knowing latent stays unsure (a step
    is 0.4 of the places' spread): the term keeps asking for a sharper latent instead of saturating."""
    noise = torch.Generator().manual_seed(1)

    def knowing(before: torch.Tensor, after: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return (torch.stack([before, torch.randn(len(before), generator=noise)], 1),
                torch.stack([after, torch.randn(len(after), generator=noise)], 1))

    def ignorant(before: torch.Tensor, after: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        shuffled = torch.randperm(len(before), generator=noise)
        return knowing(before[shuffled], after[shuffled])

    known_loss, known_accuracy = fit(InverseDynamics(2, 3), knowing)
    blind_loss, blind_accuracy = fit(InverseDynamics(2, 3), ignorant)
    assert known_accuracy > 0.5 and known_loss < math.log(3) - 0.15
    assert blind_accuracy < 0.42 and blind_loss > math.log(3) - 0.03


def test_a_flat_latent_cannot_be_scaled_back_up() -> None:
    """The latents' spread counts only down to the floor and the rows have unit length, so a latent that says where
    the paddle is at a spread of 0.001 scores no better than chance: agents' readings would not see it either."""
    tiny = lambda before, after: (0.001 * before[:, None], 0.001 * after[:, None])
    loss, accuracy = fit(InverseDynamics(1, 3), tiny)
    assert loss > math.log(3) - 0.03 and accuracy < 0.42


@pytest.mark.parametrize(("call", "match"), [
    (lambda term: term(torch.zeros(4, 2), torch.zeros(4, 2), torch.tensor([0, 1])), "one action per pair"),
    (lambda term: term(torch.zeros(4, 2), torch.zeros(3, 2), torch.tensor([0, 1, 2, 0])), "one action per pair"),
])
def test_bad_actions_are_named(call: callable, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        call(InverseDynamics(2, 3))


@pytest.mark.parametrize(("setting", "match"), [
    ({"inverse_dynamics_weight": -1.0, "num_actions": 3}, "inverse_dynamics_weight must be >= 0"),
    ({"inverse_dynamics_weight": 1.0}, "needs num_actions >= 2"),
    ({"inverse_dynamics_weight": 1.0, "num_actions": 3, "contrast_weight": 1.0, "contrast_offset": 2},
     "contrast_offset to 0 or 1"),
])
def test_bad_inverse_dynamics_settings_are_named(setting: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        build_model("vae", input_shape=(1, 32, 32), **TINY_VAE, **setting)


def test_the_vae_adds_the_term_on_paired_frames_with_actions_only() -> None:
    model = build_model("vae", input_shape=(1, 32, 32), **TINY_VAE, inverse_dynamics_weight=0.5, num_actions=3)
    assert model.pair_offset == 1 and model.num_actions == 3
    off = build_model("vae", input_shape=(1, 32, 32), **TINY_VAE)
    assert off.pair_offset == 0 and off.num_actions == 0
    x, actions = torch.rand(8, 1, 32, 32), torch.tensor([0, 1, 2, 1])
    torch.manual_seed(3)
    paired = model.training_loss(x, paired=True, actions=actions)
    torch.manual_seed(3)
    alone = model.training_loss(x)  # validation: frames without pairs or actions
    assert {"inverse_dynamics_nll", "inverse_dynamics_accuracy"} <= set(paired.metrics)
    assert "inverse_dynamics_nll" not in alone.metrics
    added = float((paired.loss - alone.loss).detach())
    assert added == pytest.approx(0.5 * float(paired.metrics["inverse_dynamics_nll"]), rel=1e-4)
    # with the contrastive term on the frame itself, the paired batch's frames are each their own partner
    both = build_model("vae", input_shape=(1, 32, 32), **TINY_VAE, inverse_dynamics_weight=1.0, num_actions=3,
                       contrast_weight=1.0, contrast_offset=0)
    metrics = both.training_loss(x, paired=True, actions=actions).metrics
    assert both.pair_offset == 1 and {"contrast_nll", "inverse_dynamics_nll"} <= set(metrics)
    # ... among the first half only: the second half holds their next frames, near-copies of them
    seen = []
    both.contrast.register_forward_hook(lambda module, inputs, output: seen.append(len(inputs[0])))
    both.training_loss(x, paired=True, actions=actions)
    both.training_loss(x)
    assert seen == [4, 8]


def test_loader_hands_the_action_taken_from_each_anchor(fake_dataset: FrameDataset) -> None:
    loader = BatchLoader(fake_dataset, np.arange(len(fake_dataset)), batch_size=16, seed=0, pair_offset=1,
                         num_actions=3)
    try:
        batch = next(loader)
    finally:
        loader.close()
    assert batch.actions.dtype == torch.int64 and batch.frames.shape == (16, 1, 32, 32)
    frames, stored = fake_dataset.frames(np.arange(len(fake_dataset))), fake_dataset.extra("action").reshape(-1)
    for anchor, partner, action in zip(batch.frames[:8].numpy(), batch.frames[8:].numpy(), batch.actions.tolist()):
        # the stored steps that lead from this anchor's frame to its partner's: the action taken there is handed on
        steps = [i for i in range(len(frames) - 1)
                 if (frames[i] == anchor).all() and (frames[i + 1] == partner).all()]
        assert steps and action in {int(stored[i]) for i in steps}
    with pytest.raises(ValueError, match="one step apart"):
        BatchLoader(fake_dataset, np.arange(len(fake_dataset)), batch_size=16, pair_offset=2, num_actions=3)
    with pytest.raises(DatasetError, match=r"actions 0\.\.2, and the model tells 2 apart"):
        BatchLoader(fake_dataset, np.arange(len(fake_dataset)), batch_size=16, pair_offset=1, num_actions=2)


def test_loader_without_stored_actions_names_the_fix(tmp_path: Path) -> None:
    config = fake_env_config()
    env = make_env(config, seed=0)
    dataset = collect_frames(env, preprocess_spec(config, env), 60, tmp_path / "frames", seed=0, extras=["reward"],
                             progress=False)
    with pytest.raises(DatasetError, match="'action' in data.extras"):
        BatchLoader(dataset, np.arange(len(dataset)), batch_size=8, pair_offset=1, num_actions=3)


def test_pretraining_with_the_term_learns_which_action_was_taken(tmp_path: Path) -> None:
    """On the fake env the paddle follows the actions: after a short run the term's predictor, reading the
    posterior means of held-out pairs, names the action far more often than chance (a third), and the
    checkpoint reloads with the env's 3 actions. (On a few hundred frames the term learns its training pairs by
    heart and stays at chance on new ones, so the run has 2,000.)"""
    cfg = tiny_config(tmp_path, steps=300)
    cfg.data.frames = 2000
    cfg.train.batch_size, cfg.train.val_every, cfg.train.checkpoint_every = 32, 300, 300
    cfg.model.update(inverse_dynamics_weight=10.0, latent_dim=8)
    metrics = pretrain(cfg)
    assert metrics["completed"] and "inverse_dynamics_nll" not in metrics["val"]  # validation has no pairs
    model, info = load_model(tmp_path / "run" / "encoder.safetensors", "cpu")
    assert info.model_config["num_actions"] == 3 and model.inverse_dynamics is not None

    env = make_env(cfg.env, seed=123)
    dataset = collect_frames(env, preprocess_spec(cfg.env, env), 400, tmp_path / "heldout", seed=123,
                             extras=["action"], progress=False)
    episodes = dataset.episodes
    anchors = np.flatnonzero(episodes[:-1] == episodes[1:])
    with torch.no_grad():
        means = model.encode(to_unit(torch.from_numpy(dataset.frames(np.arange(len(dataset))))))[0]
        actions = torch.from_numpy(dataset.extra("action", anchors).reshape(-1).astype(np.int64))
        _, accuracy = model.inverse_dynamics(means[anchors], means[anchors + 1], actions)
    assert accuracy.item() > 0.45  # chance: a third


@pytest.mark.parametrize(("change", "match"), [
    (lambda cfg: setattr(cfg, "env", fake_env_config(continuous=True)), "model.inverse_dynamics_weight=0"),
    (lambda cfg: cfg.model.update(num_actions=4), "leave model.num_actions unset"),
    (lambda cfg: setattr(cfg.data, "extras", ["reward"]), "add 'action' to data.extras"),
])
def test_pretraining_refuses_the_term_before_collecting_frames(tmp_path: Path, change: callable, match: str) -> None:
    cfg = tiny_config(tmp_path)
    cfg.model.update(inverse_dynamics_weight=1.0)
    change(cfg)
    with pytest.raises(ConfigError, match=match):
        pretrain(cfg)
    assert not (tmp_path / "data").exists()  # nothing collected
