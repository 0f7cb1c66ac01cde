"""``scripts/bench_bc.py``: BC policies on vaerl's obstacle tasks, from state vectors, encoder latents or pixels.

Each row is an observation pipeline and a policy kind (``latent:cvae``):

* ``state``: the env's state vector;
* ``latent``: 64x64-style RGB frames (``image_size``) through a pretrained vaerl encoder; the
  demonstrations hold its latents and evaluation runs in ``vaerl.wrap(env, encoder)``;
* ``pixels``: the same frames, the policy's own conv trunk trained end to end.

For each seed the scripted expert records demonstrations, every row's policy trains on them, and
each is evaluated on episodes the demonstrations never saw. The table gives success rate, the
share of successes that went each way, and mode coverage (entropy of those shares over log K).
One encoder serves every seed of a task: given (``encoder``) or pretrained once, on random-policy
frames from random starts, and kept beside the results.
"""

from __future__ import annotations

import logging
import statistics
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, NamedTuple

import gymnasium as gym

import vaerl
from agents.bc.evaluate import EvalResult, evaluate_bc
from agents.bc.plot import plot_rollouts, scene_of
from agents.bc.policy import BCPolicyConfig, build_policy
from agents.bc.run import evaluation_is_deterministic, policy_label
from agents.bc.train import TrainConfig, train_bc
from vaerl.checkpoint import CHECKPOINT_FILE
from vaerl.data.demos import Demos, encode_demos, record_demos
from vaerl.envs import EnvConfig
from vaerl.envs.obstacle import OBSTACLE_ENV_ID, THREE_WAYS_ENV_ID
from vaerl.errors import ConfigError
from vaerl.io import write_json
from vaerl.runtime import resolve_device, seed_everything

log = logging.getLogger(__name__)

TASKS = {"two_ways": OBSTACLE_ENV_ID, "three_ways": THREE_WAYS_ENV_ID}
OBSERVATIONS = {"state": "state vector", "latent": "pretrained-encoder latents", "pixels": "pixels, end to end"}
EVAL_SEED_OFFSET = 10_000
"""Evaluation episodes come from the env seeded with ``seed + EVAL_SEED_OFFSET``: unseen layouts."""
SMALL_IMAGE_LAYERS = [[32, 4, 2, 1], [64, 4, 2, 1], [64, 3, 2, 1]]
"""Conv trunk for the small frames of the pixel rows (NatureCNN's 8x8 stride-4 first layer wants 84x84)."""


@dataclass
class EncoderPretraining:
    """The encoder pretrained for ``latent`` rows when none is given."""

    steps: int = 1500
    """Gradient steps (also the one validation and checkpoint), in batches of 64."""
    frames: int = 20_000
    """Random-policy frames from random starts to pretrain on."""
    model: dict[str, Any] = field(default_factory=lambda: {
        "kind": "vae", "latent_dim": 16, "beta": 1.0, "encoder_layers": [list(layer) for layer in SMALL_IMAGE_LAYERS],
        "foreground_projections": False})
    """The encoder (``kind`` and its keyword arguments, as ``model=`` of ``scripts/pretrain_vae.py``): a
    16-d latent for the ``latent`` rows' policies, a conv trunk sized for small frames (the plain VAE the
    recorded figures in BENCHMARKS.md used)."""


@dataclass
class BenchConfig:
    """Which task, which rows, with how much data and training."""

    task: str = "two_ways"
    """``two_ways`` (vaerl/Obstacle-v0) or ``three_ways`` (vaerl/ObstacleThreeWays-v0)."""
    rows: tuple[str, ...] = ("state:cvae", "state:mse", "state:mdn")
    """``<observation>:<policy kind>`` with observation ``state``, ``latent`` or ``pixels``."""
    policies: dict[str, BCPolicyConfig] = field(default_factory=lambda: {
        "cvae": BCPolicyConfig(kind="cvae"), "mse": BCPolicyConfig(kind="mse"), "mdn": BCPolicyConfig(kind="mdn")})
    row_overrides: dict[str, dict[str, Any]] = field(default_factory=lambda: {"latent:cvae": {"beta": 0.01}})
    """Policy settings that differ for one row. CVAE-BC on encoder latents needs a weaker KL: at
    beta = 0.1 its decoder learns to ignore z (the latents tell the modes apart a few steps later
    than state vectors do) and the policy drives to one side."""
    train: TrainConfig = field(default_factory=TrainConfig)
    pixel_train: TrainConfig = field(default_factory=lambda: TrainConfig(steps=2000, batch_size=64))
    """Training of ``pixels`` rows (a conv trunk per step costs far more than an MLP)."""
    continuous: bool = True
    image_size: int = 32
    """Side of the RGB frames of ``latent`` and ``pixels`` rows."""
    encoder: str | None = None
    """Encoder for ``latent`` rows (null: pretrain one into ``work_dir``)."""
    pretraining: EncoderPretraining = field(default_factory=EncoderPretraining)
    work_dir: str = "bench_results/bc_work"
    demo_episodes: int = 200
    eval_episodes: int = 100
    seeds: tuple[int, ...] = (0, 1, 2)
    device: str = "cpu"
    threads: int = 1
    """Torch CPU threads (small MLPs and convs on small frames: 1 is fastest per core)."""

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise ConfigError(f"task must be one of {sorted(TASKS)}, got {self.task!r}")
        for row in self.rows:
            observation, _, kind = row.partition(":")
            if observation not in OBSERVATIONS or kind not in self.policies:
                raise ConfigError(f"bench rows are <observation>:<policy> with observation in {sorted(OBSERVATIONS)} "
                                  f"and policy in {sorted(self.policies)}, got {row!r}")

    def env_kwargs(self, observation: str, **extra: Any) -> dict[str, Any]:
        if observation == "state":
            return {"obs_type": "vector", "continuous": self.continuous, **extra}
        return {"obs_type": "pixels", "image_size": self.image_size, "continuous": self.continuous, **extra}


@dataclass
class BenchRow:
    name: str
    mode_names: tuple[str, ...] = ()
    success: list[float] = field(default_factory=list)
    shares: list[dict[str, float] | None] = field(default_factory=list)
    """Share of successful rollouts that went each way, per seed (``None``: no success)."""
    coverage: list[float | None] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)

    @property
    def label(self) -> str:
        observation, _, kind = self.name.partition(":")
        return f"{policy_label(kind)}, {OBSERVATIONS[observation]}"

    def add(self, result: EvalResult, seconds: float) -> None:
        succeeded = result.success_rate > 0
        self.mode_names = result.mode_names
        self.success.append(result.success_rate)
        self.shares.append(result.mode_shares if succeeded else None)
        self.coverage.append(result.mode_coverage if succeeded else None)
        self.seconds.append(seconds)

    def summary(self) -> dict[str, Any]:
        shares = [s for s in self.shares if s is not None]
        coverage = [c for c in self.coverage if c is not None]
        return {"success_rate": _stats(self.success),
                "mode_shares": {name: _stats([s[name] for s in shares]) for name in self.mode_names} if shares else None,
                "mode_coverage": _stats(coverage) if coverage else None,
                "train_seconds": _stats(self.seconds),
                "per_seed": {"success_rate": self.success, "mode_shares": self.shares, "mode_coverage": self.coverage}}


def _stats(values: list[float]) -> dict[str, float]:
    return {"mean": statistics.fmean(values), "std": statistics.pstdev(values), "min": min(values), "max": max(values)}


class BenchResult(NamedTuple):
    rows: list[BenchRow]
    last_seed_results: dict[str, EvalResult]
    seconds: float
    scene: list[Any]
    encoder: str | None


def run_bench(config: BenchConfig) -> BenchResult:
    """For each seed: record demos with the scripted expert, train every row's policy, evaluate it.

    Demonstrations, network initialisation, minibatches and evaluation episodes all follow the seed.
    """
    start = time.perf_counter()
    device = resolve_device(config.device)
    env_id = TASKS[config.task]
    observations = {row.partition(":")[0] for row in config.rows}
    encoder = (config.encoder or pretrain_bench_encoder(config)) if "latent" in observations else None
    eval_envs = {obs: _eval_env(env_id, config.env_kwargs(obs), obs, encoder, config.device) for obs in observations}
    rows = {name: BenchRow(name) for name in config.rows}
    last: dict[str, EvalResult] = {}
    for seed in config.seeds:
        demos = _record(config, env_id, observations, seed, encoder)
        for name in config.rows:
            observation, _, kind = name.partition(":")
            seed_everything(seed)
            policy_config = replace(config.policies[kind], **config.row_overrides.get(name, {}))
            train = config.pixel_train if observation == "pixels" else config.train
            if observation == "pixels":
                policy_config = replace(policy_config, conv_layers=SMALL_IMAGE_LAYERS)
            policy = build_policy(policy_config, demos[observation], device)
            trained = train_bc(policy, demos[observation], replace(train, seed=seed))
            result = evaluate_bc(policy, eval_envs[observation], config.eval_episodes, seed + EVAL_SEED_OFFSET,
                                 deterministic=evaluation_is_deterministic(kind))
            rows[name].add(result, trained.seconds)
            last[name] = result
            log.info("seed %d %s: %s (%.0fs)", seed, name, result.describe(), trained.seconds)
    scene = scene_of(next(iter(eval_envs.values())))
    return BenchResult(list(rows.values()), last, time.perf_counter() - start, scene, encoder)


def _eval_env(env_id: str, kwargs: dict[str, Any], observation: str, encoder: str | None, device: str) -> gym.Env:
    env = gym.make(env_id, **kwargs)
    return vaerl.wrap(env, encoder, device=device) if observation == "latent" else env


def _record(config: BenchConfig, env_id: str, observations: set[str], seed: int,
            encoder: str | None) -> dict[str, Demos]:
    """One seed's demonstrations for each observation pipeline (the same expert and layouts in each)."""
    demos: dict[str, Demos] = {}
    # latent rows encode the pixel demonstrations
    recorded = {"pixels" if observation == "latent" else observation for observation in observations}
    for observation in sorted(recorded):
        env = gym.make(env_id, **config.env_kwargs(observation))
        demos[observation] = record_demos(env, env.unwrapped.scripted_expert(seed), config.demo_episodes, seed,
                                          expert="scripted")
    if encoder is not None:
        demos["latent"] = encode_demos(demos["pixels"], encoder, device=config.device)
    return demos


def pretrain_bench_encoder(config: BenchConfig) -> str:
    """Pretrain (or reuse) the task's encoder on random-policy frames from random starts; returns its path."""
    from vaerl.training import PretrainConfig, pretrain
    from vaerl.training.config import DataConfig, WeightingConfig
    from vaerl.training.config import TrainConfig as PretrainTrainConfig

    settings = config.pretraining
    run_dir = Path(config.work_dir) / "encoders" / f"{config.task}-{config.image_size}px"
    env = EnvConfig(name=f"bench_{config.task}", id=TASKS[config.task], kind="gym", size=None, grayscale=False,
                    kwargs=config.env_kwargs("latent", random_start=True))
    if not (run_dir / CHECKPOINT_FILE).exists():
        log.info("pretraining the %s encoder into %s", config.task, run_dir)
        pretrain(PretrainConfig(
            env=env,
            model=dict(settings.model),
            data=DataConfig(frames=settings.frames, root=str(Path(config.work_dir) / "frames"), extras=[]),
            train=PretrainTrainConfig(steps=settings.steps, batch_size=64, val_every=settings.steps,
                                      val_frames=512, checkpoint_every=settings.steps, log_every=100,
                                      num_threads=config.threads),
            weighting=WeightingConfig(background_frames=500), seed=0, device=config.device, run_dir=str(run_dir),
            progress=False))
    return str(run_dir / CHECKPOINT_FILE)


def bench_table(result: BenchResult) -> str:
    """A markdown table: success rate, mode shares of successful rollouts and mode coverage, mean ± std over seeds."""
    names = result.rows[0].mode_names if result.rows else ()
    lines = ["| policy, observations | success rate | " + "".join(f"successes {name} | " for name in names)
             + "mode coverage | train s/seed |",
             "|---|---|" + "---|" * len(names) + "---|---|"]
    for row in result.rows:
        s = row.summary()
        success, shares, coverage = s["success_rate"], s["mode_shares"], s["mode_coverage"]
        cells = [_pm(shares[name]) for name in names] if shares else ["– (no success)"] + ["–"] * (len(names) - 1)
        lines.append(f"| {row.label} | {_pm(success)} | " + "".join(f"{c} | " for c in cells)
                     + f"{_pm(coverage, percent=False) if coverage else '–'} | {s['train_seconds']['mean']:.0f} |")
    return "\n".join(lines)


def _pm(stats: dict[str, float], percent: bool = True) -> str:
    if percent:
        return f"{stats['mean']:.1%} ± {stats['std']:.1%}"
    return f"{stats['mean']:.2f} ± {stats['std']:.2f}"


def write_bench(result: BenchResult, config: BenchConfig, json_path: Path, picture_path: Path | None) -> None:
    write_json(json_path, {"config": asdict(config), "seconds": result.seconds, "encoder": result.encoder,
                           "policies": {row.name: row.summary() for row in result.rows}, "table": bench_table(result)})
    if picture_path is not None:
        labels = {row.name: row.label for row in result.rows}
        plot_rollouts([(labels[name], r) for name, r in result.last_seed_results.items()], picture_path, result.scene)
