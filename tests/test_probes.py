"""Linear probes: the F1 metric, the AtariARI protocol steps, and the RAM annotation table."""

import json

import numpy as np
import pytest
import torch
from conftest import TINY_VAE

from vaerl.checkpoint import save_checkpoint
from vaerl.data import FrameDataset, FrameDatasetWriter, drop_duplicates, split_episodes
from vaerl.envs import make_env, preprocess_spec
from vaerl.errors import ConfigError, DatasetError
from vaerl.evaluation.annotations import GameAnnotation, find_annotation, load_annotations
from vaerl.evaluation.probes import (
    ProbeReport,
    ProbeSettings,
    balanced_accuracy,
    fit_linear_probes,
    label_entropy,
    majority_predictions,
    probe_encoder,
    probed_columns,
    reward_labels,
    score_predictions,
    score_reward,
    weighted_f1,
)
from vaerl.models import build_model

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
    assert majority_predictions(np.array([[-1], [0], [-1]]), 1).tolist() == [[-1]]  # negative labels (rewards)
    assert label_entropy(np.zeros(10)) == 0.0
    assert label_entropy(np.arange(4)) == pytest.approx(np.log(4))


def test_balanced_accuracy_and_nonzero_f1_see_through_a_majority_guess():
    y_true = np.array([0] * 18 + [1, -1])
    majority = np.zeros(20, dtype=np.int64)
    assert weighted_f1(y_true, majority) > 0.85  # the weighted F1 of always guessing "no reward"
    scores = score_reward(y_true, majority)
    assert scores["balanced_accuracy"] == pytest.approx(1 / 3) and scores["nonzero_f1"] == 0.0
    assert score_reward(y_true, y_true) == {"f1": 1.0, "accuracy": 1.0, "balanced_accuracy": 1.0, "nonzero_f1": 1.0}
    # recall 1 on class 0, 1/2 on class 1: mean 3/4, whatever the class sizes
    assert balanced_accuracy([0, 0, 0, 0, 1, 1], [0, 0, 0, 0, 1, 0]) == pytest.approx(0.75)
    assert score_reward(np.zeros(5, np.int64), np.zeros(5, np.int64))["nonzero_f1"] is None  # no reward to find


def test_reward_labels_are_the_sign_of_the_reward():
    assert reward_labels(np.array([0.0, 4.0, -1.0, 0.5, -7.0], np.float32)).tolist() == [0, 1, -1, 1, -1]


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


def _rare_reward(n, rng, noise_only=False):
    """Clipped rewards, 4% +1 and 4% -1; features hold them linearly (plus noise) unless ``noise_only``."""
    rewards = rng.choice([-1, 0, 1], size=n, p=[0.04, 0.92, 0.04])
    codes = rng.normal(size=(3, 8)) * 3
    latents = rng.normal(size=(n, 8)) if noise_only else codes[rewards + 1] + 0.3 * rng.normal(size=(n, 8))
    return torch.tensor(latents, dtype=torch.float32), rewards[:, None]


@pytest.mark.parametrize("noise_only", [False, True])
def test_balanced_reward_probe_finds_rare_rewards_only_where_the_features_hold_them(noise_only):
    rng = np.random.default_rng(3)
    x, y = _rare_reward(2400, rng, noise_only)
    fit = fit_linear_probes(x[:1600], y[:1600], x[1600:2000], y[1600:2000], lr=1e-2, batch_size=256,
                            max_epochs=30, patience=5, balanced=True)
    scores = score_reward(y[2000:, 0], fit.probes.predict(x[2000:])[:, 0])
    majority = score_reward(y[2000:, 0], majority_predictions(y[:1600], 400)[:, 0])
    if noise_only:
        assert scores["nonzero_f1"] < 0.3 and scores["balanced_accuracy"] < 0.55  # chance: 1/3
    else:
        assert scores["nonzero_f1"] > 0.9 and scores["balanced_accuracy"] > 0.9
    assert majority["nonzero_f1"] == 0.0 and majority["balanced_accuracy"] == pytest.approx(1 / 3)
    assert majority["f1"] > 0.85


def test_plain_probe_on_noise_does_no_better_than_the_majority():
    rng = np.random.default_rng(4)
    x, y = _rare_reward(2400, rng, noise_only=True)
    fit = fit_linear_probes(x[:1600], y[:1600], x[1600:2000], y[1600:2000], lr=1e-2, batch_size=256,
                            max_epochs=30, patience=5)
    predicted = weighted_f1(y[2000:, 0], fit.probes.predict(x[2000:])[:, 0])
    assert predicted == pytest.approx(weighted_f1(y[2000:, 0], majority_predictions(y[:1600], 400)[:, 0]), abs=0.02)


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


def test_annotations_group_variables_by_atariari_category():
    games = load_annotations()
    breakout, pong = games["Breakout"], games["Pong"]
    assert breakout.categories["small_object_localization"] == ("ball_x", "ball_y")
    assert breakout.categories["agent_localization"] == ("player_x",)
    assert "block_bit_map_0" in breakout.categories["misc"] and "blocks_hit_count" in breakout.categories["misc"]
    assert pong.categories == {"small_object_localization": ("ball_x", "ball_y"),
                               "agent_localization": ("player_y", "player_x"),
                               "other_localization": ("enemy_y", "enemy_x"),
                               "score_clock_lives_display": ("enemy_score", "player_score")}
    assert games["FakeFrames"].categories["agent_localization"] == ("paddle_x",)
    for game in games.values():  # every category names the game's own variables
        assert {v for members in game.categories.values() for v in members} <= set(game.variables), game.name


def test_a_category_must_be_known_and_name_the_games_variables(tmp_path):
    path = tmp_path / "mine.json"
    game = {"variables": {"x": 5}, "categories": {"ball": ["x"]}}
    path.write_text(json.dumps({"games": {"G": game}}))
    with pytest.raises(ConfigError, match="unknown category 'ball'"):
        load_annotations(path)
    game["categories"] = {"agent_localization": ["y"]}
    path.write_text(json.dumps({"games": {"G": game}}))
    with pytest.raises(ConfigError, match=r"names \['y'\], which are not among its variables"):
        load_annotations(path)


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


@pytest.mark.parametrize("weighted", [False, True])
def test_fused_probe_loss_equals_one_cross_entropy_per_variable(weighted):
    import torch.nn.functional as F

    from vaerl.evaluation.probes import LinearProbes

    torch.manual_seed(0)
    classes = [np.arange(5), np.array([7]), np.arange(0, 21, 3)]
    weight = torch.rand(13) + 0.1 if weighted else None
    probes = LinearProbes(4, classes, torch.zeros(4), torch.ones(4), class_weight=weight)
    x = torch.randn(10, 4) * 5
    targets = torch.stack([torch.randint(0, 5, (10,)), torch.zeros(10, dtype=torch.long),
                           torch.randint(0, 7, (10,))], dim=1)
    logits = probes(x)
    per_variable = weight.split([5, 1, 7]) if weighted else [None] * 3
    expected = sum(F.cross_entropy(lg, targets[:, v], weight=per_variable[v])
                   for v, lg in enumerate(probes.split(logits)))
    assert torch.allclose(probes.loss(logits, targets), expected, atol=1e-5)


def test_numbered_variables_are_listed_as_a_range():
    from vaerl.evaluation.probes import compact_names

    names = [f"block_bit_map_{i}" for i in range(30)] + ["player_x", "score_0", "score_2"]
    assert compact_names(names) == "block_bit_map_0..29, player_x, score_0, score_2"


# ---------------------------------------------------------------------------------------------- the report
def _report() -> ProbeReport:
    scores = {method: {v: {"f1": f1, "accuracy": f1} for v, f1 in values.items()} for method, values in {
        "encoder": {"ball_x": 0.9, "ball_y": 0.7, "player_x": 0.8, "score": 0.2},
        "majority": {"ball_x": 0.1, "ball_y": 0.1, "player_x": 0.4, "score": 0.6}}.items()}
    reward = {"encoder": {"f1": 0.9, "accuracy": 0.9, "balanced_accuracy": 0.8, "nonzero_f1": 0.5},
              "majority": {"f1": 0.97, "accuracy": 0.98, "balanced_accuracy": 0.5, "nonzero_f1": None}}
    categories = {"small_object_localization": ["ball_x", "ball_y"], "agent_localization": ["player_x"],
                  "score_clock_lives_display": ["score"]}
    return ProbeReport("Breakout", ["ball_x", "ball_y", "player_x", "score"], scores, categories=categories,
                       reward=reward, info={"reward": {"test_counts": {"0": 98, "1": 2}}})


def test_report_averages_scores_per_category_and_over_ball_and_player():
    report = _report()
    assert report.group_f1("encoder") == pytest.approx({
        "ball_and_player": 0.8, "small_object_localization": 0.8, "agent_localization": 0.8,
        "score_clock_lives_display": 0.2})
    assert report.group_f1("majority")["ball_and_player"] == pytest.approx(0.2)
    assert report.mean_f1() == pytest.approx(0.65)


def test_report_round_trips_through_json_with_categories_and_reward():
    report = _report()
    data = json.loads(json.dumps(report.to_dict()))
    assert data["group_f1"]["encoder"]["ball_and_player"] == pytest.approx(0.8)
    assert ProbeReport.from_dict(data) == report
    old = {k: v for k, v in data.items() if k not in ("categories", "reward")}  # a report from before both
    assert ProbeReport.from_dict(old).group_f1() == {} and ProbeReport.from_dict(old).reward == {}


def test_report_table_shows_category_and_reward_rows():
    table = _report().table()
    assert "| mean F1, ball & player (3) | 0.80 | 0.20 |" in table
    assert "| mean F1, small objects (2) | 0.80 | 0.10 |" in table
    assert "| reward bal. acc. | 0.80 | 0.50 |" in table
    assert "| reward ±1 F1 | 0.50 | – |" in table  # the majority guess has no nonzero F1 to show
    assert "categories (AtariARI): ball & player = ball_x, ball_y, player_x" in table


def test_comparison_table_has_a_column_per_category_and_the_reward_probe():
    from vaerl.evaluation.runs import comparison_table

    report = _report()
    report.scores["random_init"] = report.scores["majority"]
    report.reward["random_init"] = report.reward["encoder"]
    table = comparison_table({("Breakout", "vae"): report})
    assert ("| game | features | mean F1 | ball & player | small objects | agent | score/clock/lives | reward F1 | "
            "reward bal. acc. | reward ±1 F1 |") in table
    assert "| Breakout | VAE | 0.65 | 0.80 | 0.80 | 0.80 | 0.20 | 0.90 | 0.80 | 0.50 |" in table
    assert "| Breakout | VAE random init | 0.30 | 0.20 |" in table
    assert "| Breakout | majority | 0.30 | 0.20 | 0.10 | 0.40 | 0.60 | 0.97 | 0.50 | – |" in table


# ---------------------------------------------------------------------------------------------- the protocol, end to end
def _frames_with_rewards(path, rewards: bool):
    """6 episodes of random 32x32 frames with RAM and (optionally) a reward every 5th frame, -1 every 7th."""
    rng = np.random.default_rng(0)
    extras = {"ram": ("uint8", (128,)), **({"reward": ("float32", ())} if rewards else {})}
    with FrameDatasetWriter(path, (1, 32, 32), extras) as writer:
        for episode in range(6):
            steps = np.arange(50)
            reward = np.where(steps % 5 == 4, 1.0, np.where(steps % 7 == 6, -1.0, 0.0))
            writer.add(rng.integers(0, 255, (50, 1, 32, 32), dtype=np.uint8), episode,
                       ram=rng.integers(0, 255, (50, 128), dtype=np.uint8), **({"reward": reward} if rewards else {}))
        writer.close()
    return FrameDataset(path)


@pytest.mark.parametrize("rewards", [True, False])
def test_probe_encoder_reports_categories_and_the_reward_probe(tmp_path, checkpoint, rewards):
    from vaerl import load_encoder

    dataset = _frames_with_rewards(tmp_path / "frames", rewards)
    settings = ProbeSettings(min_episode_length=10, max_epochs=2, patience=1, batch_size=64)
    report = probe_encoder(load_encoder(checkpoint, "cpu"), dataset, find_annotation("vaerl/FakeFrames-v0"),
                           settings=settings)
    assert report.categories == {"small_object_localization": ["ball_x", "ball_y"], "agent_localization": ["paddle_x"]}
    assert set(report.group_f1("random_init")) == {"ball_and_player", "small_object_localization", "agent_localization"}
    if rewards:
        assert set(report.reward) == {"encoder", "random_init", "majority"}
        assert report.reward["majority"]["nonzero_f1"] == 0.0
        assert sum(report.info["reward"]["test_counts"].values()) == report.sizes["test"]
    else:
        assert report.reward == {} and "without rewards" in report.info["reward"]["skipped"]
        assert "reward probe skipped" in report.table()


@pytest.mark.parametrize("part", ["gaussian", "foreground"])
def test_a_part_of_the_vae_latent_is_probed_alone(tmp_path, checkpoint, monkeypatch, part):
    """``probe.part=gaussian`` fits the probes on a VAE's Gaussian means alone (what training adds to the fixed
    foreground path), ``probe.part=foreground`` on that path alone, for the encoder and its random init alike;
    other families have no such parts."""
    from vaerl import load_encoder
    from vaerl.evaluation import probes

    encoder = load_encoder(checkpoint, "cpu")
    if encoder.kind == "vae":  # a trained encoder's background: not the zeros of its random init
        encoder.model.set_background(torch.rand(encoder.spec.input_shape, generator=torch.Generator().manual_seed(0)))
    dataset = _frames_with_rewards(tmp_path / "frames", rewards=False)
    settings = ProbeSettings(min_episode_length=10, max_epochs=2, patience=1, batch_size=64, part=part)
    if encoder.kind != "vae":
        with pytest.raises(ValueError, match="use probe.part=all"):
            probe_encoder(encoder, dataset, find_annotation("vaerl/FakeFrames-v0"), settings=settings)
        return
    widths, fed = [], []
    fit = probes.fit_linear_probes

    def spy(x, *args, **kwargs):
        widths.append(x.shape[1])
        fed.append(np.asarray(x))
        return fit(x, *args, **kwargs)

    monkeypatch.setattr(probes, "fit_linear_probes", spy)
    report = probe_encoder(encoder, dataset, find_annotation("vaerl/FakeFrames-v0"), settings=settings)
    gaussian = encoder.model.config.latent_dim
    assert encoder.latent_dim() > gaussian  # the latent agents get holds the cells too
    expected = gaussian if part == "gaussian" else encoder.latent_dim() - gaussian
    assert widths == [expected] * 2 and report.info["settings"]["part"] == part
    if part == "foreground":  # signed cells are linear in the frame: another background shifts each number alone
        trained, random_init = fed
        assert np.abs(trained - random_init).max() > 0.1
        shift = (trained - random_init).mean(axis=0)
        np.testing.assert_allclose(trained - shift, random_init, atol=1e-4)  # (float rounding can still move a probe)


def test_the_foreground_part_of_a_vae_without_one_is_refused(tmp_path, fake_config):
    from vaerl import load_encoder

    spec = preprocess_spec(fake_config, make_env(fake_config))
    plain = build_model("vae", input_shape=spec.input_shape, **TINY_VAE, foreground_projections=False)
    path = save_checkpoint(tmp_path / "plain.safetensors", plain, spec, fake_config.to_dict())
    with pytest.raises(ValueError, match="this encoder has none: use probe.part=all or probe.part=gaussian"):
        probed_columns(load_encoder(path, "cpu"), "foreground")


def test_an_unknown_part_is_named():
    with pytest.raises(ValueError, match="probe.part must be one of"):
        ProbeSettings(part="cells")
