"""What ``scripts/train_bc.py`` and ``scripts/bench_bc.py`` run: train, evaluate, write outputs.

Every input is loaded and checked before anything is written, so a bad demo file, a checkpoint
for another env or a mismatched env leaves the output directory as it was.
"""

from __future__ import annotations

import logging
import statistics
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, NamedTuple

import gymnasium as gym

from agents.bc.checkpoint import check_policy_env, load_policy, save_policy
from agents.bc.evaluate import EvalResult, evaluate_bc
from agents.bc.plot import plot_rollouts
from agents.bc.policy import BCPolicy, BCPolicyConfig, build_policy
from agents.bc.train import TrainConfig, TrainResult, train_bc
from vaerl.config import from_dict
from vaerl.data.demos import Demos, load_demos, obs_transform_from_name, record_demos
from vaerl.envs import EnvConfig, make_env
from vaerl.envs.obstacle import OBSTACLE_ENV_ID
from vaerl.errors import CheckpointError, ConfigError
from vaerl.io import write_json
from vaerl.runtime import configure_threads, resolve_device, seed_everything

log = logging.getLogger(__name__)

# policies whose per-step randomness is what lets them cover both modes are evaluated stochastically
STOCHASTIC_KINDS = ("mdn",)
POLICY_LABELS = {"cvae": "CVAE-BC", "mse": "regression BC (MSE)", "mdn": "MDN-BC"}


@dataclass
class TrainBCConfig:
    """``scripts/train_bc.py``: train a BC policy on a demo file, evaluate it, draw its rollouts."""

    demos: str | None = None
    """The ``.npz`` demo file (``scripts/collect_demos.py`` writes one)."""
    policy: BCPolicyConfig = field(default_factory=BCPolicyConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    baseline: str | None = "mse"
    """Also train this policy kind with the same settings, for comparison and the picture (null: none)."""
    checkpoint: str | None = None
    """Evaluate this trained policy instead of training one."""
    env: EnvConfig | None = None
    """Evaluate in this env instead of the one the demos were recorded in."""
    eval_episodes: int = 100
    deterministic: bool | None = None
    """Evaluate without per-step action noise; null: true except for mdn (which needs it to cover modes)."""
    out: str = "runs/bc"
    seed: int = 0
    device: str = "auto"
    threads: int = 0
    """Torch CPU threads; 0: 1 for vector observations (small MLPs are slower with more), 2 for images."""


class TrainBCOutputs(NamedTuple):
    out_dir: Path
    policy: Path | None
    eval_json: Path
    picture: Path | None


class PolicyRun(NamedTuple):
    name: str
    policy: BCPolicy
    train: TrainResult | None
    result: EvalResult


def run_train_bc(config: TrainBCConfig) -> TrainBCOutputs:
    """Train (or load), evaluate and save; see :class:`TrainBCConfig`."""
    if not config.demos:
        raise ConfigError("give the demonstrations: demos=<path to a .npz written by scripts/collect_demos.py>")
    if config.eval_episodes < 1:
        raise ConfigError(f"eval_episodes must be >= 1, got {config.eval_episodes}")
    device = resolve_device(config.device)
    demos = load_demos(config.demos)
    configure_threads(config.threads or (2 if len(demos.metadata.stored_obs_shape) == 3 else 1))
    env = _eval_env(demos, config.env, config.seed)
    demos.check_env(env, where=f"the demonstrations in {config.demos}")
    transform = obs_transform_from_name(demos.metadata.obs_transform, config.device)

    runs: list[PolicyRun] = []
    if config.checkpoint:
        policy = load_policy(config.checkpoint, env=env, device=device)
        if policy.spec.obs_transform != demos.metadata.obs_transform:
            raise CheckpointError(f"{config.checkpoint} observes {policy.spec.obs_transform or 'raw observations'}, "
                                  f"the demos hold {demos.metadata.obs_transform or 'raw observations'}: evaluate it "
                                  "with demos recorded the same way")
        runs.append(_evaluate(policy.config.kind, policy, None, env, config, transform))
    else:
        kinds = [config.policy.kind] + ([config.baseline] if config.baseline and config.baseline != config.policy.kind
                                        else [])
        for kind in kinds:
            seed_everything(config.seed)
            policy = build_policy(replace(config.policy, kind=kind), demos, device)
            trained = train_bc(policy, demos, replace(config.train, seed=config.seed))
            runs.append(_evaluate(kind, policy, trained, env, config, transform))
    env.close()

    out = Path(config.out)
    policy_path = None if config.checkpoint else save_policy(
        runs[0].policy, out / "policy.safetensors", extra={"demos": str(config.demos)})
    for run in runs[1:]:
        save_policy(run.policy, out / f"baseline_{run.name}.safetensors", extra={"demos": str(config.demos)})
    picture = plot_rollouts([(_label(run), run.result) for run in runs], out / "rollouts.png")
    report = {
        "demos": str(config.demos),
        "demo_episodes": demos.num_episodes,
        "checkpoint": config.checkpoint,
        "seed": config.seed,
        "policies": {run.name: _report(run) for run in runs},
        "config": asdict(config),
    }
    eval_json = write_json(out / "eval.json", report)
    for run in runs:
        summary = run.result.summary()
        log.info("%s: success %.2f, left/right %.2f/%.2f", run.name, summary["success_rate"],
                 summary["mode_coverage"]["left"], summary["mode_coverage"]["right"])
    return TrainBCOutputs(out, policy_path, eval_json, picture)


def _eval_env(demos: Demos, override: EnvConfig | None, seed: int) -> gym.Env:
    if override is not None:
        return make_env(override, seed=seed)
    if demos.metadata.env_config:
        return make_env(from_dict(EnvConfig, demos.metadata.env_config, "env"), seed=seed)
    if demos.metadata.env_id:
        return make_env(EnvConfig(name=demos.metadata.env_id, id=demos.metadata.env_id, kind="gym"), seed=seed)
    raise ConfigError("the demo file does not say which env it was recorded in: pass env=... to evaluate")


def _evaluate(name: str, policy: BCPolicy, trained: TrainResult | None, env: gym.Env, config: TrainBCConfig,
              transform: Any) -> PolicyRun:
    check_policy_env(policy.spec, env)
    deterministic = config.deterministic if config.deterministic is not None else name not in STOCHASTIC_KINDS
    result = evaluate_bc(policy, env, config.eval_episodes, config.seed, deterministic=deterministic,
                         obs_transform=transform)
    return PolicyRun(name, policy, trained, result)


def _label(run: PolicyRun) -> str:
    return POLICY_LABELS.get(run.policy.config.kind, run.name)


def _report(run: PolicyRun) -> dict[str, Any]:
    report: dict[str, Any] = {"eval": run.result.summary(), "policy": run.policy.describe()}
    if run.train is not None:
        final = run.train.final
        report["train"] = {"seconds": run.train.seconds, "final": final._asdict() if final else None,
                           "history": [entry._asdict() for entry in run.train.history]}
    return report


# ---------------------------------------------------------------------------------------------- benchmark
@dataclass
class BenchConfig:
    """``scripts/bench_bc.py``: every policy kind on the obstacle env, over several seeds."""

    policies: dict[str, BCPolicyConfig] = field(default_factory=lambda: {
        "cvae": BCPolicyConfig(kind="cvae"), "mse": BCPolicyConfig(kind="mse"), "mdn": BCPolicyConfig(kind="mdn")})
    train: TrainConfig = field(default_factory=TrainConfig)
    env_kwargs: dict[str, Any] = field(default_factory=lambda: {"obs_type": "vector"})
    demo_episodes: int = 200
    eval_episodes: int = 100
    seeds: tuple[int, ...] = (0, 1, 2)
    device: str = "cpu"


@dataclass
class BenchRow:
    name: str
    success: list[float] = field(default_factory=list)
    left: list[float | None] = field(default_factory=list)
    """Share of successful rollouts that passed on the left, per seed (``None``: no success)."""
    seconds: list[float] = field(default_factory=list)

    def add(self, result: EvalResult, seconds: float) -> None:
        self.success.append(result.success_rate)
        self.left.append(result.mode_coverage["left"] if result.success_rate > 0 else None)
        self.seconds.append(seconds)

    def summary(self) -> dict[str, Any]:
        shares = [v for v in self.left if v is not None]
        return {"success_rate": _stats(self.success), "left_share": _stats(shares) if shares else None,
                "train_seconds": _stats(self.seconds),
                "per_seed": {"success_rate": self.success, "left_share": self.left}}


def _stats(values: list[float]) -> dict[str, float]:
    return {"mean": statistics.fmean(values), "std": statistics.pstdev(values), "min": min(values), "max": max(values)}


class BenchResult(NamedTuple):
    rows: list[BenchRow]
    last_seed_results: dict[str, EvalResult]
    seconds: float


def run_bench(config: BenchConfig) -> BenchResult:
    """For each seed: record demos with the scripted expert, train every policy, evaluate it.

    Demonstrations, network initialisation, minibatches and evaluation episodes all follow the seed;
    evaluation uses episodes the demos never saw (env seeded with ``seed + 10_000``).
    """
    start = time.perf_counter()
    device = resolve_device(config.device)
    rows = {name: BenchRow(name) for name in config.policies}
    last: dict[str, EvalResult] = {}
    for seed in config.seeds:
        demo_env = gym.make(OBSTACLE_ENV_ID, **config.env_kwargs)
        demos = record_demos(demo_env, demo_env.unwrapped.scripted_expert(seed), config.demo_episodes, seed,
                             expert="scripted")
        eval_env = gym.make(OBSTACLE_ENV_ID, **config.env_kwargs)
        for name, policy_config in config.policies.items():
            seed_everything(seed)
            policy = build_policy(policy_config, demos, device)
            trained = train_bc(policy, demos, replace(config.train, seed=seed))
            result = evaluate_bc(policy, eval_env, config.eval_episodes, seed + 10_000,
                                 deterministic=policy_config.kind not in STOCHASTIC_KINDS)
            rows[name].add(result, trained.seconds)
            last[name] = result
            log.info("seed %d %s: success %.2f left share %.2f (%.0fs)", seed, name, result.success_rate,
                     result.mode_coverage["left"], trained.seconds)
    return BenchResult(list(rows.values()), last, time.perf_counter() - start)


def bench_table(result: BenchResult) -> str:
    """A markdown table: success rate and mode coverage (side shares of successful rollouts), mean ± std over seeds."""
    lines = ["| policy | success rate | successes passing left | successes passing right | train s/seed |",
             "|---|---|---|---|---|"]
    for row in result.rows:
        s = row.summary()
        success, left = s["success_rate"], s["left_share"]
        sides = (f"{left['mean']:.1%} ± {left['std']:.1%} | {1 - left['mean']:.1%} ± {left['std']:.1%}" if left
                 else "– (no success) | –")
        lines.append(f"| {POLICY_LABELS.get(row.name, row.name)} | {success['mean']:.1%} ± {success['std']:.1%} | "
                     f"{sides} | {s['train_seconds']['mean']:.0f} |")
    return "\n".join(lines)


def write_bench(result: BenchResult, config: BenchConfig, json_path: Path, picture_path: Path | None) -> None:
    write_json(json_path, {"config": asdict(config), "seconds": result.seconds,
                           "policies": {row.name: row.summary() for row in result.rows}, "table": bench_table(result)})
    if picture_path is not None:
        plot_rollouts([(POLICY_LABELS.get(name, name), r) for name, r in result.last_seed_results.items()],
                      picture_path)

