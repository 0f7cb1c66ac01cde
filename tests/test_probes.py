"""Linear probes: the F1 metric, the AtariARI protocol steps, and the RAM annotation table."""

import json

import numpy as np
import pytest
import torch

from vaerl.data import FrameDataset, FrameDatasetWriter
from vaerl.errors import ConfigError, DatasetError
from vaerl.evaluation.annotations import GameAnnotation, find_annotation, load_annotations
from vaerl.evaluation.probes import (
    drop_duplicates,
    fit_linear_probes,
    label_entropy,
    majority_predictions,
    score_predictions,
    split_episodes,
    weighted_f1,
)

pytestmark = pytest.mark.usefixtures("one_thread")


# ---------------------------------------------------------------------------------------------- F1
def test_weighted_f1_matches_a_hand_computed_case():
    y_true = [0, 0, 0, 1, 1, 2]
    y_pred = [0, 0, 1, 1, 2, 2]
    # class 0: TP 2, 3 true, 2 predicted -> F1 4/5;  class 1: TP 1, 2 true, 2 predicted -> 1/2
    # class 2: TP 1, 1 true, 2 predicted -> 2/3;     weighted by true counts 3, 2, 1
    expected = (3 * 4 / 5 + 2 * 1 / 2 + 1 * 2 / 3) / 6
    assert weighted_f1(y_true, y_pred) == pytest.approx(expected)


def test_values_that_are_only_predicted_cost_recall_but_carry_no_weight():
    # value 7 is never true: its false positive is class 0's false negative
    assert weighted_f1([0, 0], [0, 7]) == pytest.approx(2 / 3)
    assert weighted_f1([5, 5, 9], [5, 5, 9]) == 1.0
    assert weighted_f1([1, 2, 3], [4, 5, 6]) == 0.0


def test_weighted_f1_rejects_mismatched_labels():
    with pytest.raises(ValueError, match="equally long"):
        weighted_f1([1, 2], [1])


def test_majority_baseline_predicts_the_most_frequent_training_value():
    train = np.array([[3, 200], [3, 7], [5, 7]])
    assert majority_predictions(train, 2).tolist() == [[3, 7], [3, 7]]
    assert label_entropy(np.zeros(10)) == 0.0
    assert label_entropy(np.arange(4)) == pytest.approx(np.log(4))


# ---------------------------------------------------------------------------------------------- probes
def _synthetic(n, rng, noise_only=False):
    """Byte labels of two variables; latents hold variable 0 linearly (plus noise), never variable 1."""
    labels = np.stack([rng.choice(np.arange(40, 240, 8), n), rng.integers(0, 20, n)], axis=1)
    codes = rng.normal(size=(256, 12))
    latents = rng.normal(size=(n, 12)) if noise_only else codes[labels[:, 0]] + 0.05 * rng.normal(size=(n, 12))
    return torch.tensor(latents, dtype=torch.float32), labels


def test_probe_recovers_a_linearly_encoded_variable_and_not_an_absent_one():
    rng = np.random.default_rng(0)
    x, y = _synthetic(1800, rng)
    fit = fit_linear_probes(x[:1200], y[:1200], x[1200:1500], y[1200:1500], lr=1e-2, batch_size=256,
                            max_epochs=40, patience=5)
    scores = score_predictions(["present", "absent"], y[1500:], fit.probes.predict(x[1500:]))
    assert scores["present"]["f1"] > 0.95
    assert scores["absent"]["f1"] < 0.2  # 20 equally likely values: chance is 0.05


def test_probe_on_noise_scores_near_chance():
    rng = np.random.default_rng(1)
    x, y = _synthetic(1800, rng, noise_only=True)
    fit = fit_linear_probes(x[:1200], y[:1200], x[1200:1500], y[1200:1500], lr=1e-2, batch_size=256,
                            max_epochs=40, patience=5)
    scores = score_predictions(["a", "b"], y[1500:], fit.probes.predict(x[1500:]))
    assert scores["a"]["f1"] < 0.15  # 25 values: chance 0.04
    assert scores["b"]["f1"] < 0.15


def test_probe_only_predicts_values_seen_in_training():
    rng = np.random.default_rng(2)
    x, y = _synthetic(600, rng)
    fit = fit_linear_probes(x[:400], y[:400], x[400:], y[400:], max_epochs=3)
    predictions = fit.probes.predict(torch.randn(50, 12) * 10)
    for v in range(2):
        assert set(predictions[:, v]) <= set(y[:400, v])


# ---------------------------------------------------------------------------------------------- protocol steps
def test_split_keeps_episodes_whole_and_drops_short_ones():
    episodes = np.repeat(np.arange(12), [70] * 11 + [10])
    split = split_episodes(episodes, val_fraction=0.1, test_fraction=0.2, min_length=64, seed=3)
    parts = [set(episodes[idx]) for idx in (split.train, split.val, split.test)]
    assert parts[0].isdisjoint(parts[1]) and parts[0].isdisjoint(parts[2]) and parts[1].isdisjoint(parts[2])
    assert 11 not in set().union(*parts) and split.short_episodes == 1
    assert (len(parts[1]), len(parts[2])) == (1, 2)
    with pytest.raises(DatasetError, match="episodes"):
        split_episodes(np.repeat(np.arange(2), 100))


def test_test_frames_identical_to_training_frames_are_removed(tmp_path):
    frames = np.random.default_rng(0).integers(0, 255, (30, 1, 4, 4), dtype=np.uint8)
    frames[25] = frames[3]  # a test frame that also appears in training
    with FrameDatasetWriter(tmp_path / "d", (1, 4, 4)) as writer:
        writer.add(frames, np.repeat(np.arange(3), 10))
        writer.close()
    dataset = FrameDataset(tmp_path / "d")
    split = split_episodes(dataset.episodes, min_length=1, seed=0)
    split = type(split)(np.arange(10), np.arange(10, 20), np.arange(20, 30))
    deduped, removed = drop_duplicates(dataset, split)
    assert removed == 1 and 25 not in deduped.test and len(deduped.test) == 9


# ---------------------------------------------------------------------------------------------- annotations
def test_shipped_annotations_hold_the_atariari_addresses():
    games = load_annotations()
    breakout = find_annotation({"name": "Breakout", "id": "ALE/Breakout-v5"}, games)
    assert {k: breakout.variables[k] for k in ("ball_x", "ball_y", "player_x", "blocks_hit_count", "score")} == \
        {"ball_x": 99, "ball_y": 101, "player_x": 72, "blocks_hit_count": 77, "score": 84}
    assert breakout.variables["block_bit_map_29"] == 29  # a list of addresses expands to name_0, name_1, ...
    pong = find_annotation("PongNoFrameskip-v4", games)
    assert pong.variables == {"player_y": 51, "player_x": 46, "enemy_y": 50, "enemy_x": 45, "ball_x": 49,
                              "ball_y": 54, "enemy_score": 13, "player_score": 14}
    assert find_annotation("pong", games) is pong and pong.reference["AtariARI ST-DIM"] == 0.81


def test_fake_env_annotation_matches_its_ram_layout():
    from vaerl.envs.fake import RAM_BALL_X, RAM_BALL_Y, RAM_PADDLE_X

    fake = find_annotation({"name": "fake", "id": "vaerl/FakeFrames-v0"})
    assert fake.variables == {"ball_x": RAM_BALL_X, "ball_y": RAM_BALL_Y, "paddle_x": RAM_PADDLE_X}
    ram = np.arange(256, dtype=np.uint8)[:128][None].repeat(2, 0)
    assert fake.labels(ram).tolist() == [[RAM_BALL_X, RAM_BALL_Y, RAM_PADDLE_X]] * 2


def test_adding_a_game_is_a_data_change(tmp_path):
    path = tmp_path / "mine.json"
    path.write_text(json.dumps({"games": {"MyGame": {"ids": ["my/Game-v0"], "variables": {"x": 5, "ys": [6, 7]}}}}))
    game = find_annotation("my/Game-v0", load_annotations(path))
    assert isinstance(game, GameAnnotation) and game.variables == {"x": 5, "ys_0": 6, "ys_1": 7}
    path.write_text(json.dumps({"games": {"Bad": {"variables": {"x": 300}}}}))
    with pytest.raises(ConfigError, match="RAM address 300"):
        load_annotations(path)
    with pytest.raises(ConfigError, match="no RAM annotations for CarRacing-v3"):
        find_annotation("CarRacing-v3")


def test_fused_probe_loss_equals_one_cross_entropy_per_variable():
    import torch.nn.functional as F

    from vaerl.evaluation.probes import LinearProbes

    torch.manual_seed(0)
    probes = LinearProbes(4, [np.arange(5), np.array([7]), np.arange(0, 21, 3)], torch.zeros(4), torch.ones(4))
    x = torch.randn(10, 4) * 5
    targets = torch.stack([torch.randint(0, 5, (10,)), torch.zeros(10, dtype=torch.long),
                           torch.randint(0, 7, (10,))], dim=1)
    logits = probes(x)
    expected = sum(F.cross_entropy(lg, targets[:, v]) for v, lg in enumerate(probes.split(logits)))
    assert torch.allclose(probes.loss(logits, targets), expected, atol=1e-5)


def test_numbered_variables_are_listed_as_a_range():
    from vaerl.evaluation.probes import compact_names

    names = [f"block_bit_map_{i}" for i in range(30)] + ["player_x", "score_0", "score_2"]
    assert compact_names(names) == "block_bit_map_0..29, player_x, score_0, score_2"
