"""CVAE-BC and the regression baselines: network maths, acting, training, checkpoints, scripts."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import gymnasium as gym
import imageio.v3 as iio
import numpy as np
import pytest
import torch
from conftest import REPO
from torch.distributions import Categorical, Independent, MixtureSameFamily, Normal, kl_divergence

from agents.bc.checkpoint import load_policy, save_policy
from agents.bc.collect import CollectDemosConfig, collect_demos
from agents.bc.evaluate import evaluate_bc
from agents.bc.plot import plot_rollouts, scene_of
from agents.bc.policy import BCPolicyConfig, build_policy
from agents.bc.run import TrainBCConfig, run_train_bc
from agents.bc.train import TrainConfig, train_bc
from vaerl.cli import run_main
from vaerl.data.demos import DemoMetadata, Demos, describe_space, record_demos, save_demos
from vaerl.envs import EnvConfig
from vaerl.envs.obstacle import OBSTACLE_ENV_ID
from vaerl.errors import CheckpointError, ConfigError, DatasetError, ObservationError
from vaerl.models.bc import CVAE, CVAEConfig, MixtureHead, gaussian_kl_between, make_action_head
from vaerl.models.vae import gaussian_kl
from vaerl.runtime import seed_everything

TINY_CONV = [[8, 4, 2, 1], [16, 4, 2, 1]]


def toy_demos(n: int = 1024, seed: int = 0, action_space: gym.Space | None = None) -> Demos:
    """Two equally likely actions (+0.8 / -0.8) for every state: the smallest multimodal dataset."""
    rng = np.random.default_rng(seed)
    space = action_space or gym.spaces.Box(-1.0, 1.0, (1,), np.float32)
    obs = rng.uniform(-1, 1, (n, 2)).astype(np.float32)
    signs = rng.choice([-1.0, 1.0], n)
    if isinstance(space, gym.spaces.Discrete):
        actions = np.where(signs > 0, 2, 0).astype(np.int64)
    else:
        actions = (0.8 * signs[:, None]).astype(np.float32)
    meta = DemoMetadata(env_id=None, observation_space=describe_space(gym.spaces.Box(-1.0, 1.0, (2,), np.float32)),
                        action_space=describe_space(space), episodes=n, steps=n, stored_obs_shape=(2,),
                        stored_obs_dtype="float32")
    return Demos(obs, actions, np.zeros(n, np.float32), np.arange(n), np.ones(n, bool), {}, meta)


@pytest.fixture(scope="module")
def obstacle_demos() -> Demos:
    env = gym.make(OBSTACLE_ENV_ID)
    return record_demos(env, env.unwrapped.scripted_expert(0), 8, seed=0)


# ---------------------------------------------------------------------------------------------- network maths
@pytest.mark.parametrize("head,obs_shape", [("gaussian", (5,)), ("mean", (3, 24, 24)), ("categorical", (5,))])
def test_cvae_shapes_and_a_finite_loss(head: str, obs_shape: tuple[int, ...]) -> None:
    config = CVAEConfig(obs_shape=obs_shape, action_dim=3, action_head=head, chunk=4, latent_dim=2, hidden=[32],
                        conv_layers=TINY_CONV, image_features=16, prior="mixture", prior_components=3)
    model = CVAE(config)
    obs = torch.randint(0, 256, (6, *obs_shape), dtype=torch.uint8) if len(obs_shape) == 3 else torch.randn(6, 5)
    actions = torch.randint(0, 3, (6, 4)) if head == "categorical" else torch.rand(6, 4, 3) * 2 - 1
    out = model(obs, actions)
    per_step = {"gaussian": 6, "mean": 3, "categorical": 3}[head]
    assert out.params.shape == (6, 4, per_step)
    assert out.mu.shape == out.logvar.shape == out.z.shape == (6, 2)
    assert out.prior.mu.shape == (6, 3, 2) and out.prior.logits.shape == (6, 3)
    loss = model.loss(obs, actions, torch.ones(6, 4), kl_weight=0.5)
    assert torch.isfinite(loss.loss) and torch.isclose(loss.loss, loss.recon + 0.5 * loss.kl, atol=1e-5)
    loss.loss.backward()
    assert all(p.grad is not None for p in model.parameters())
    assert model.noise_dim == 3  # latent noise + the component pick
    assert model.action_params(obs, torch.zeros(6, 3)).shape == (6, 4, per_step)
    assert model.action_params(obs, None).shape == (6, 4, per_step)


def test_kl_terms_equal_the_closed_form() -> None:
    torch.manual_seed(0)
    mu_q, logvar_q, mu_p, logvar_p = (torch.randn(10, 3) for _ in range(4))
    q = Normal(mu_q, (0.5 * logvar_q).exp())
    expected = kl_divergence(q, Normal(mu_p, (0.5 * logvar_p).exp()))
    torch.testing.assert_close(gaussian_kl_between(mu_q, logvar_q, mu_p, logvar_p), expected)
    zeros = torch.zeros(10, 3)
    torch.testing.assert_close(gaussian_kl_between(mu_q, logvar_q, zeros, zeros), gaussian_kl(mu_q, logvar_q))
    torch.testing.assert_close(gaussian_kl(mu_q, logvar_q), kl_divergence(q, Normal(zeros, 1.0)))
    # the model's KL, with the N(0, I) prior and with a learned prior, sums over latent dimensions
    for prior_kind in ("standard", "learned"):
        model = CVAE(CVAEConfig(obs_shape=(4,), action_dim=2, latent_dim=3, hidden=[8], prior=prior_kind))
        out = model(torch.randn(5, 4), torch.rand(5, 1, 2))
        posterior = Normal(out.mu, (0.5 * out.logvar).exp())
        prior = Normal(out.prior.mu[:, 0], (0.5 * out.prior.logvar[:, 0]).exp())
        torch.testing.assert_close(model.kl(out), kl_divergence(posterior, prior).sum(-1))


def test_mixture_prior_density_kl_estimate_and_sampling() -> None:
    torch.manual_seed(0)
    model = CVAE(CVAEConfig(obs_shape=(4,), action_dim=2, latent_dim=2, hidden=[8], prior="mixture",
                            prior_components=3))
    out = model(torch.randn(5, 4), torch.rand(5, 1, 2))
    prior = out.prior
    mixture = MixtureSameFamily(Categorical(logits=prior.logits),
                                Independent(Normal(prior.mu, (0.5 * prior.logvar).exp()), 1))
    torch.testing.assert_close(prior.log_prob(out.z), mixture.log_prob(out.z))
    log_q = Independent(Normal(out.mu, (0.5 * out.logvar).exp()), 1).log_prob(out.z)
    torch.testing.assert_close(model.kl(out), log_q - mixture.log_prob(out.z))  # one-sample estimate
    torch.testing.assert_close(prior.mean(), mixture.mean)
    # with zero Gaussian noise a draw is a component mean, picked by the weights' CDF
    picks = torch.tensor([-8.0, 0.0, 8.0])  # normal quantiles ~0, 0.5, ~1
    for pick in picks:
        z = prior.sample(torch.cat([torch.zeros(5, 2), torch.full((5, 1), float(pick))], -1))
        cdf = prior.logits.softmax(-1).cumsum(-1)
        index = (cdf < 0.5 * (1 + torch.erf(pick / 2**0.5))).sum(-1).clamp(max=2)
        torch.testing.assert_close(z, prior.mu[torch.arange(5), index])


def test_action_head_likelihoods() -> None:
    torch.manual_seed(0)
    mask = torch.tensor([[1.0, 1.0, 0.0]] * 4)  # the last chunk step lies past the episode's end
    actions = torch.rand(4, 3, 2) * 2 - 1

    gaussian = make_action_head("gaussian", 2, 3)
    params = torch.randn(4, 3, 4) * 0.3  # log-stds inside the head's clamp range
    mean, log_std = params[..., :2], params[..., 2:]
    expected = -(Normal(mean, log_std.exp()).log_prob(actions).sum(-1) * mask).sum(1)
    torch.testing.assert_close(gaussian.nll(params, actions, mask), expected)

    regression = make_action_head("mean", 2, 3)
    torch.testing.assert_close(regression.nll(params[..., :2], actions, mask),
                               ((params[..., :2] - actions) ** 2).sum(-1)[:, :2].sum(1))

    categorical = make_action_head("categorical", 5, 3)
    logits, labels = torch.randn(4, 3, 5), torch.randint(0, 5, (4, 3))
    torch.testing.assert_close(categorical.nll(logits, labels, mask),
                               -(Categorical(logits=logits).log_prob(labels) * mask).sum(1))

    mixture = MixtureHead(2, 1, components=3)
    raw = torch.randn(4, 1, mixture.num_params)
    logits_c, means, log_stds = mixture.split(raw)
    dist = MixtureSameFamily(Categorical(logits=logits_c),
                             Independent(Normal(means[:, 0], log_stds[:, 0].exp()), 1))
    torch.testing.assert_close(mixture.nll(raw, actions[:, :1], torch.ones(4, 1)), -dist.log_prob(actions[:, 0]))


# ---------------------------------------------------------------------------------------------- the two-mode toy
def test_cvae_covers_both_modes_where_regression_predicts_the_mean(one_thread) -> None:
    demos = toy_demos()
    train = TrainConfig(steps=600, batch_size=128, lr=3e-3, log_every=600)
    seed_everything(0)
    cvae = build_policy(BCPolicyConfig(kind="cvae", hidden=[64, 64]), demos)
    train_bc(cvae, demos, train)
    seed_everything(0)
    mse = build_policy(BCPolicyConfig(kind="mse", hidden=[64, 64]), demos)
    train_bc(mse, demos, train)

    obs = torch.as_tensor(np.random.default_rng(1).uniform(-1, 1, (400, 2)), dtype=torch.float32)
    with torch.no_grad():
        regression = mse.network.action_params(obs)[:, 0, 0]
        samples = cvae.network.action_params(obs, torch.randn(400, cvae.network.noise_dim))[:, 0, 0]
    assert regression.abs().mean() < 0.15  # the mean of +0.8 and -0.8
    assert (samples > 0.4).float().mean() > 0.3 and (samples < -0.4).float().mean() > 0.3
    assert (samples.abs() < 0.2).float().mean() < 0.2  # few samples fall between the modes


def test_training_is_deterministic_per_seed(one_thread) -> None:
    demos = toy_demos(128)

    def fit(seed: int) -> dict[str, torch.Tensor]:
        seed_everything(seed)
        policy = build_policy(BCPolicyConfig(kind="cvae", hidden=[16]), demos)
        train_bc(policy, demos, TrainConfig(steps=20, batch_size=32, seed=seed, log_every=10))
        return policy.state_dict()

    first, again, other = fit(0), fit(0), fit(1)
    assert all(torch.equal(first[k], again[k]) for k in first)
    assert not all(torch.equal(first[k], other[k]) for k in first)


# ---------------------------------------------------------------------------------------------- acting
def test_predict_keeps_z_for_an_episode_and_redraws_at_a_new_one() -> None:
    demos = toy_demos(64)
    policy = build_policy(BCPolicyConfig(kind="cvae", hidden=[16], latent_dim=2), demos)
    policy.seed(0)
    obs = np.zeros(2, np.float32)
    first, _ = policy.predict(obs, episode_start=np.array([True]))
    same, _ = policy.predict(obs, episode_start=np.array([False]))
    other, _ = policy.predict(obs, episode_start=np.array([True]))
    assert first.shape == (1,) and first.dtype == np.float32
    np.testing.assert_array_equal(first, same)
    assert not np.array_equal(first, other)
    policy.seed(0)
    np.testing.assert_array_equal(policy.predict(obs)[0], first)  # seeding replays the draws
    batch, state = policy.predict(np.zeros((3, 2), np.float32), state="kept", episode_start=np.ones(3, bool))
    assert batch.shape == (3, 1) and state == "kept" and len(np.unique(batch)) == 3
    with pytest.raises(ObservationError, match=r"shaped \(2,\)"):
        policy.predict(np.zeros(5, np.float32))


def test_prior_mean_is_the_same_every_episode() -> None:
    policy = build_policy(BCPolicyConfig(kind="cvae", hidden=[16], z_sample="mean"), toy_demos(64))
    obs = np.full(2, 0.3, np.float32)
    actions = [policy.predict(obs, episode_start=np.array([True]))[0] for _ in range(3)]
    assert all(np.array_equal(actions[0], a) for a in actions)


def test_discrete_actions_use_a_categorical_head() -> None:
    demos = toy_demos(64, action_space=gym.spaces.Discrete(3))
    policy = build_policy(BCPolicyConfig(kind="mse", hidden=[16]), demos)
    action, _ = policy.predict(np.zeros(2, np.float32), deterministic=True)
    assert action.dtype == np.int64 and action.shape == () and 0 <= action < 3
    with pytest.raises(ConfigError, match="mdn is for Box"):
        build_policy(BCPolicyConfig(kind="mdn"), demos)


class _Counting(torch.nn.Module):
    """A stand-in network whose n-th prediction is the chunk [n, n, n] / 10 (so averages are visible)."""

    noise_dim = 0

    def __init__(self, head: torch.nn.Module) -> None:
        super().__init__()
        self.head, self.calls = head, 0

    def action_params(self, obs: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return torch.full((len(obs), self.head.chunk, 1), self.calls / 10)


@pytest.mark.parametrize("ensemble", [True, False])
def test_chunks_are_ensembled_or_executed_open_loop(ensemble: bool) -> None:
    demos = toy_demos(16, action_space=gym.spaces.Box(-10.0, 10.0, (1,), np.float32))
    policy = build_policy(BCPolicyConfig(kind="mse", hidden=[4], chunk=3, ensemble_decay=0.0,
                                         temporal_ensemble=ensemble), demos)
    policy.network = _Counting(policy.network.head)
    obs = np.zeros(2, np.float32)
    actions = [float(policy.predict(obs, episode_start=np.array([t == 0]))[0][0]) for t in range(5)]
    if ensemble:  # step t averages the predictions made at t-2, t-1, t (calls are numbered from 1)
        expected = [1, 1.5, 2, 3, 4]
        assert policy.network.calls == 5
    else:  # a plan every 3 steps, executed as it is
        expected = [1, 1, 1, 2, 2]
        assert policy.network.calls == 2
    np.testing.assert_allclose(actions, expected, rtol=1e-5)  # 0.1 per call, scaled by the [-10, 10] bounds


# ---------------------------------------------------------------------------------------------- evaluation
def test_evaluate_counts_success_and_sides_for_any_predict_policy() -> None:
    env = gym.make(OBSTACLE_ENV_ID)
    result = evaluate_bc(env.unwrapped.scripted_expert(0), env, 20, seed=0)
    summary = result.summary()
    assert summary["success_rate"] == 1.0 and sum(summary["successes_by_mode"].values()) == 20
    assert set(summary["mode_shares"]) == {"left", "right"} and 0.2 <= summary["mode_shares"]["left"] <= 0.8
    assert abs(sum(summary["mode_shares"].values()) - 1.0) < 1e-9
    left = summary["mode_shares"]["left"]
    entropy = -(left * np.log(left) + (1 - left) * np.log(1 - left)) / np.log(2)
    assert summary["mode_coverage"] == pytest.approx(entropy)
    assert all(r.positions is not None and r.positions.shape == (r.length + 1, 2) for r in result.rollouts)


def test_mode_coverage_is_the_entropy_of_the_shares_of_successes_over_log_k() -> None:
    from agents.bc.evaluate import EvalResult, Rollout

    def result(modes: list[int], success: bool = True) -> EvalResult:
        return EvalResult([Rollout(success, m, 10, 1.0, None) for m in modes], ("left", "middle", "right"))

    assert result([0, 1, 2] * 4).mode_coverage == pytest.approx(1.0)
    assert result([1] * 12).mode_coverage == 0.0 and result([1] * 12).mode_shares["middle"] == 1.0
    two_of_three = result([0, 2] * 6)
    assert two_of_three.mode_coverage == pytest.approx(np.log(2) / np.log(3))
    # failures and episodes that passed no way do not count
    mixed = EvalResult(result([0, 1, 2]).rollouts + result([0, 0, 0], success=False).rollouts
                       + result([-1]).rollouts, ("left", "middle", "right"))
    assert mixed.mode_counts().tolist() == [1, 1, 1] and mixed.success_rate == pytest.approx(4 / 7)
    assert EvalResult([Rollout(True, 0, 1, 0.0, None)]).mode_coverage is None  # an env that names no modes


def test_three_way_expert_covers_every_mode(tmp_path: Path) -> None:
    from vaerl.envs.obstacle import THREE_WAYS_ENV_ID

    env = gym.make(THREE_WAYS_ENV_ID)
    result = evaluate_bc(env.unwrapped.scripted_expert(0), env, 30, seed=0)
    assert result.success_rate == 1.0 and result.mode_coverage > 0.95
    assert plot_rollouts([("expert", result)], tmp_path / "r.png", scene_of(env)) is not None


def test_rollout_picture(tmp_path: Path) -> None:
    env = gym.make(OBSTACLE_ENV_ID)
    result = evaluate_bc(env.unwrapped.scripted_expert(0), env, 4, seed=0)
    path = plot_rollouts([("expert", result), ("again", result)], tmp_path / "r.png", scene_of(env))
    assert path is not None and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# ---------------------------------------------------------------------------------------------- checkpoints
def test_checkpoint_round_trip_and_refusals(tmp_path: Path, obstacle_demos: Demos) -> None:
    policy = build_policy(BCPolicyConfig(kind="cvae", hidden=[16], chunk=2), obstacle_demos)
    path = save_policy(policy, tmp_path / "policy.safetensors")
    env = gym.make(OBSTACLE_ENV_ID)
    loaded = load_policy(path, env=env)
    obs, _ = env.reset(seed=0)
    policy.seed(3), loaded.seed(3)
    np.testing.assert_array_equal(policy.predict(obs)[0], loaded.predict(obs)[0])
    with pytest.raises(CheckpointError, match="another env.*observation space"):
        load_policy(path, env=gym.make(OBSTACLE_ENV_ID, obs_type="pixels"))
    with pytest.raises(CheckpointError, match="another env.*trained in vaerl/Obstacle-v0"):
        load_policy(path, env=gym.make("MountainCarContinuous-v0"))
    with pytest.raises(CheckpointError, match="no BC policy at .*scripts/train_bc.py"):
        load_policy(tmp_path / "missing.safetensors")
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(path.read_bytes()[:100])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        load_policy(truncated)
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(2)}, str(tmp_path / "other.safetensors"), metadata={"format": "vaerl-encoder"})
    with pytest.raises(CheckpointError, match="not a vaerl BC policy"):
        load_policy(tmp_path / "other.safetensors")


# ---------------------------------------------------------------------------------------------- entry points
def tiny_run(demos: Path, out: Path, **kwargs) -> TrainBCConfig:
    return TrainBCConfig(demos=str(demos), out=str(out), policy=BCPolicyConfig(hidden=[16]), eval_episodes=2,
                         train=TrainConfig(steps=10, batch_size=32, log_every=5), device="cpu", **kwargs)


def test_train_bc_outputs_and_checkpoint_reuse(tmp_path: Path, obstacle_demos: Demos, one_thread) -> None:
    demos = save_demos(obstacle_demos, tmp_path / "demos.npz")
    outputs = run_train_bc(tiny_run(demos, tmp_path / "run"))
    report = json.loads(outputs.eval_json.read_text())
    assert set(report["policies"]) == {"cvae", "mse"}
    assert report["policies"]["cvae"]["train"]["final"]["step"] == 10
    assert {p.name for p in outputs.out_dir.iterdir()} == {"policy.safetensors", "baseline_mse.safetensors",
                                                            "eval.json", "rollouts.png", "rollouts.mp4"}
    frames = iio.imread(outputs.video)  # 3 episodes rendered at 4x, start to finish
    assert frames.shape[1:] == (256, 256, 3) and len(frames) > 3 and report["video"] == "rollouts.mp4"
    again = run_train_bc(tiny_run(demos, tmp_path / "again", checkpoint=str(outputs.policy), baseline=None))
    assert json.loads(again.eval_json.read_text())["policies"]["cvae"]["eval"]["episodes"] == 2
    assert again.policy is None  # evaluating a checkpoint writes no new policy


def test_train_bc_bad_inputs_write_nothing(tmp_path: Path, obstacle_demos: Demos, one_thread) -> None:
    good = save_demos(obstacle_demos, tmp_path / "demos.npz")
    policy = run_train_bc(tiny_run(good, tmp_path / "run", baseline=None)).policy
    env = gym.make(OBSTACLE_ENV_ID, obs_type="pixels", image_size=16)
    pixels = save_demos(record_demos(env, env.unwrapped.scripted_expert(0), 1, seed=0), tmp_path / "pixels.npz")
    empty = tmp_path / "empty.npz"
    empty.touch()
    out = tmp_path / "out"
    cases = [
        (tiny_run(empty, out), DatasetError, "empty"),
        (tiny_run(tmp_path / "missing.npz", out), DatasetError, "no demo file"),
        (tiny_run(pixels, out, checkpoint=str(policy)), CheckpointError, "policy for another env"),
        (tiny_run(good, out, env=EnvConfig(name="o", id=OBSTACLE_ENV_ID, kind="gym", kwargs={"continuous": False})),
         DatasetError, "action space is Discrete"),
        (tiny_run("", out), ConfigError, "demos="),
    ]
    for config, error, message in cases:
        with pytest.raises(error, match=message):
            run_train_bc(config)
        assert not out.exists()


# ---------------------------------------------------------------------------------------------- scripts
def run_script(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO / "scripts" / args[0]), *args[1:]], cwd=cwd,
                          capture_output=True, text=True, timeout=180, check=False)


@pytest.mark.slow
def test_collect_then_train_scripts(tmp_path: Path) -> None:
    demos = tmp_path / "demos.npz"
    done = run_script("collect_demos.py", "env=obstacle", "expert=scripted", "episodes=4", f"out={demos}",
                      f"hydra.run.dir={tmp_path / 'h1'}", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    out = tmp_path / "run"
    done = run_script("train_bc.py", f"demos={demos}", "policy=cvae", "train.steps=30", "train.batch_size=32",
                      "eval_episodes=3", "policy.hidden=[16]", f"hydra.run.dir={out}", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert json.loads((out / "eval.json").read_text())["policies"]["mse"]["eval"]["episodes"] == 3
    assert (out / "policy.safetensors").is_file() and (out / "rollouts.png").read_bytes()[:4] == b"\x89PNG"


def test_a_bad_input_is_one_clean_line_and_exit_code_2(tmp_path: Path, capsys) -> None:
    """What the scripts do with a VaerlError (they wrap their body in vaerl.cli.run_main)."""
    existing = tmp_path / "demos.npz"
    existing.write_bytes(b"old")
    config = CollectDemosConfig(env=EnvConfig(name="o", id=OBSTACLE_ENV_ID, kind="gym"), out=str(existing))
    with pytest.raises(SystemExit) as exit_info:
        run_main(lambda: collect_demos(config))
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "overwrite=true" in err and "Traceback" not in err
    assert existing.read_bytes() == b"old"


@pytest.mark.slow
def test_bench_script_smoke(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    done = run_script("bench_bc.py", "--seeds", "0", "--demo-episodes", "3", "--eval-episodes", "2", "--steps", "5",
                      "--out", str(out), "--picture", str(tmp_path / "bench.png"), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "| CVAE-BC, state vector |" in done.stdout and "| regression BC (MSE), state vector |" in done.stdout
    assert "successes left | successes right | mode coverage" in done.stdout
    assert set(json.loads(out.read_text())["policies"]) == {"state:cvae", "state:mse", "state:mdn"}
    assert (tmp_path / "bench.png").is_file()


def test_bench_rows_from_latents_and_pixels_on_three_ways(tmp_path: Path, one_thread) -> None:
    """Every observation pipeline on the three-way task, with an encoder pretrained on the spot (tiny budgets)."""
    from agents.bc.bench import BenchConfig, EncoderPretraining, bench_table, run_bench

    config = BenchConfig(task="three_ways", rows=("state:mse", "latent:cvae", "pixels:mse"), image_size=16,
                         policies={"cvae": BCPolicyConfig(hidden=[16]), "mse": BCPolicyConfig(kind="mse", hidden=[16])},
                         train=TrainConfig(steps=4, batch_size=16, log_every=4),
                         pixel_train=TrainConfig(steps=2, batch_size=8, log_every=2),
                         pretraining=EncoderPretraining(steps=2, frames=120,
                                                         model={**EncoderPretraining().model, "latent_dim": 4}),
                         work_dir=str(tmp_path / "work"), demo_episodes=2, eval_episodes=2, seeds=(0,))
    result = run_bench(config)
    assert result.encoder is not None and Path(result.encoder).is_file()
    assert [row.name for row in result.rows] == ["state:mse", "latent:cvae", "pixels:mse"]
    assert all(row.mode_names == ("left", "middle", "right") and len(row.success) == 1 for row in result.rows)
    table = bench_table(result)
    assert "| CVAE-BC, pretrained-encoder latents |" in table and "successes middle" in table
    # the encoder is pretrained once and reused
    assert run_bench(config).encoder == result.encoder


# ---------------------------------------------------------------------------------------------- observations
def test_pixel_observations_go_through_a_conv_trunk(one_thread) -> None:
    env = gym.make(OBSTACLE_ENV_ID, obs_type="pixels", image_size=24)
    demos = record_demos(env, env.unwrapped.scripted_expert(0), 2, seed=0)
    policy = build_policy(BCPolicyConfig(kind="cvae", hidden=[16], conv_layers=TINY_CONV, image_features=16), demos)
    assert policy.channels_last and policy.network.obs_encoder.is_image
    train_bc(policy, demos, TrainConfig(steps=3, batch_size=8, log_every=3))
    obs, _ = env.reset(seed=0)
    action, _ = policy.predict(obs)
    assert env.action_space.contains(action)


def test_latent_demos_need_the_same_transform_at_test_time(one_thread) -> None:
    env = gym.make(OBSTACLE_ENV_ID)
    transform = lambda obs: (obs[:4] * 2).astype(np.float32)
    demos = record_demos(env, env.unwrapped.scripted_expert(0), 3, seed=0, obs_transform=transform,
                         transform_name="encoder:stand-in")
    policy = build_policy(BCPolicyConfig(kind="mse", hidden=[16]), demos)
    assert policy.spec.obs_shape == (4,) and policy.spec.obs_transform == "encoder:stand-in"
    result = evaluate_bc(policy, env, 2, seed=0, obs_transform=transform)
    assert result.episodes == 2
    with pytest.raises(ObservationError, match="trained on encoder:stand-in"):
        evaluate_bc(policy, env, 1, seed=0)


# ---------------------------------------------------------------------------------------------- configs
def compose(name: str, overrides: list[str]) -> dict:
    """A primary config as its script sees it: composed, resolved, without the hydra and paths nodes."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import OmegaConf, open_dict

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(REPO / "configs"), version_base="1.3"):
        cfg = hydra_compose(config_name=name, overrides=overrides, return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        del cfg["hydra"]
    data = OmegaConf.to_container(cfg, resolve=True)
    data.pop("paths")
    return data


@pytest.mark.parametrize("policy", ["cvae", "mse", "mdn"])
def test_train_bc_configs_parse(policy: str) -> None:
    from vaerl.cli import parse_config

    config = parse_config(TrainBCConfig, compose("train_bc", [f"policy={policy}", "demos=d.npz"]))
    assert config.policy.kind == policy and config.demos == "d.npz" and config.baseline == "mse"
    if policy == "cvae":
        assert config.policy == BCPolicyConfig()  # the yaml spells out the library's defaults


@pytest.mark.parametrize("env", ["obstacle", "obstacle_pixels"])
def test_collect_demos_configs_parse(env: str) -> None:
    from vaerl.cli import parse_config

    config = parse_config(CollectDemosConfig, compose("collect_demos", [f"env={env}", "episodes=7"]))
    assert config.env.id == OBSTACLE_ENV_ID and config.episodes == 7
    assert config.out.endswith(f"{env}_7ep_seed0.npz")


def test_evaluation_is_reproducible_per_seed(obstacle_demos: Demos) -> None:
    policy = build_policy(BCPolicyConfig(kind="cvae", hidden=[16]), obstacle_demos)
    env = gym.make(OBSTACLE_ENV_ID, max_steps=8)
    first, again, other = (evaluate_bc(policy, env, 3, seed=s) for s in (4, 4, 5))
    assert all(np.array_equal(a.positions, b.positions) for a, b in zip(first.rollouts, again.rollouts))
    assert not all(np.array_equal(a.positions, b.positions) for a, b in zip(first.rollouts, other.rollouts))
