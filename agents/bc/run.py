"""What ``scripts/train_bc.py`` runs: train (or load) a BC policy, evaluate it, write its outputs.

Every input is loaded and checked before anything is written, so a bad demo file, a checkpoint
for another env or a mismatched env leaves the output directory as it was.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, NamedTuple

import gymnasium as gym

import vaerl
from agents.bc.checkpoint import check_policy_env, load_policy, save_policy
from agents.bc.evaluate import EvalResult, evaluate_bc
from agents.bc.plot import plot_rollouts, scene_of
from agents.bc.policy import BCPolicy, BCPolicyConfig, build_policy
from agents.bc.train import TrainConfig, TrainResult, train_bc
from agents.bc.video import rollout_video, scene_fps
from vaerl.config import from_dict
from vaerl.data.demos import Demos, demo_encoder, encode_demos, load_demo_source
from vaerl.envs import EnvConfig, make_env
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
    """The ``.npz`` demo file, or ``minari:<dataset id>`` for a locally installed Minari dataset
    (``scripts/collect_demos.py`` writes either)."""
    encoder: str | None = None
    """A vaerl encoder whose latents the policy observes: demonstrations of raw frames are encoded
    with it, stored latents must come from it, and evaluation runs in ``vaerl.wrap(env, encoder)``.
    null: the encoder the demonstrations were recorded with, if any."""
    policy: BCPolicyConfig = field(default_factory=BCPolicyConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    baseline: str | None = "mse"
    """Also train this policy kind with the same settings, for comparison and the picture (null: none)."""
    checkpoint: str | None = None
    """Evaluate this trained policy instead of training one."""
    env: EnvConfig | None = None
    """Evaluate in this env instead of the one the demos were recorded in."""
    eval_episodes: int = 100
    video_episodes: int = 3
    """Episodes of the policy in ``rollouts.mp4`` (a GIF where no MP4 writer is installed; 0: none)."""
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
    video: Path | None


class PolicyRun(NamedTuple):
    name: str
    policy: BCPolicy
    train: TrainResult | None
    result: EvalResult


def run_train_bc(config: TrainBCConfig) -> TrainBCOutputs:
    """Train (or load), evaluate and save; see :class:`TrainBCConfig`."""
    if not config.demos:
        raise ConfigError("give the demonstrations: demos=<path to a .npz written by scripts/collect_demos.py> "
                          "or demos=minari:<dataset id>")
    if config.eval_episodes < 1:
        raise ConfigError(f"eval_episodes must be >= 1, got {config.eval_episodes}")
    device = resolve_device(config.device)
    demos = load_demo_source(config.demos)
    env = _eval_env(demos, config.env, config.seed)
    demos.check_env(env, where=f"the demonstrations in {config.demos}")
    encoder = demo_encoder(demos, config.encoder)
    if encoder is not None and demos.metadata.obs_transform is None:
        demos = encode_demos(demos, encoder, config.device)
    configure_threads(config.threads or (2 if len(demos.metadata.stored_obs_shape) == 3 else 1))
    # a policy on latents acts in the env seen through the encoder, exactly as an RL agent would
    policy_env = vaerl.wrap(env, encoder, device=device) if encoder is not None else env

    scene = scene_of(env)
    runs: list[PolicyRun] = []
    if config.checkpoint:
        policy = load_policy(config.checkpoint, env=env, device=device)
        if not policy.spec.observes_like(demos.metadata):
            raise CheckpointError(f"{config.checkpoint} observes {policy.spec.obs_transform or 'raw observations'}, "
                                  f"the demos hold {demos.metadata.obs_transform or 'raw observations'}: evaluate it "
                                  "with demos recorded the same way")
        runs.append(_evaluate(policy.config.kind, policy, None, env, policy_env, config))
    else:
        kinds = [config.policy.kind] + ([config.baseline] if config.baseline and config.baseline != config.policy.kind
                                        else [])
        for kind in kinds:
            seed_everything(config.seed)
            policy = build_policy(replace(config.policy, kind=kind), demos, device)
            trained = train_bc(policy, demos, replace(config.train, seed=config.seed))
            runs.append(_evaluate(kind, policy, trained, env, policy_env, config))

    out = Path(config.out)
    first = runs[0]
    video = rollout_video(first.policy, policy_env, out / "rollouts.mp4", config.video_episodes, config.seed,
                          deterministic=evaluation_is_deterministic(first.name, config.deterministic),
                          fps=scene_fps(env)) if config.video_episodes > 0 else None
    policy_env.close()  # closes env too
    policy_path = None if config.checkpoint else save_policy(
        runs[0].policy, out / "policy.safetensors", extra={"demos": str(config.demos)})
    for run in runs[1:]:
        save_policy(run.policy, out / f"baseline_{run.name}.safetensors", extra={"demos": str(config.demos)})
    picture = plot_rollouts([(policy_label(run.policy.config.kind), run.result) for run in runs],
                            out / "rollouts.png", scene)
    report = {
        "demos": str(config.demos),
        "demo_episodes": demos.num_episodes,
        "checkpoint": config.checkpoint,
        "seed": config.seed,
        "policies": {run.name: _report(run) for run in runs},
        "video": video.name if video is not None else None,
        "config": asdict(config),
    }
    eval_json = write_json(out / "eval.json", report)
    for run in runs:
        log.info("%s: %s", run.name, run.result.describe())
    return TrainBCOutputs(out, policy_path, eval_json, picture, video)


def _eval_env(demos: Demos, override: EnvConfig | None, seed: int) -> gym.Env:
    if override is not None:
        return make_env(override, seed=seed)
    if demos.metadata.env_config:
        return make_env(from_dict(EnvConfig, demos.metadata.env_config, "env"), seed=seed)
    if demos.metadata.env_id:
        return make_env(EnvConfig(name=demos.metadata.env_id, id=demos.metadata.env_id, kind="gym"), seed=seed)
    raise ConfigError("the demo file does not say which env it was recorded in: pass env=... to evaluate")


def evaluation_is_deterministic(kind: str, override: bool | None = None) -> bool:
    """Whether a policy kind is evaluated without per-step action noise (``override`` when given)."""
    return override if override is not None else kind not in STOCHASTIC_KINDS


def _evaluate(name: str, policy: BCPolicy, trained: TrainResult | None, env: gym.Env, policy_env: gym.Env,
              config: TrainBCConfig) -> PolicyRun:
    """Check ``policy`` against the raw ``env``, then roll it out in ``policy_env`` (``env`` or its latent view)."""
    check_policy_env(policy.spec, env)
    deterministic = evaluation_is_deterministic(name, config.deterministic)
    result = evaluate_bc(policy, policy_env, config.eval_episodes, config.seed, deterministic=deterministic)
    return PolicyRun(name, policy, trained, result)


def policy_label(kind: str) -> str:
    """How tables and pictures name a policy kind."""
    return POLICY_LABELS.get(kind, kind)


def _report(run: PolicyRun) -> dict[str, Any]:
    report: dict[str, Any] = {"eval": run.result.summary(), "policy": run.policy.describe()}
    if run.train is not None:
        final = run.train.final
        report["train"] = {"seconds": run.train.seconds, "final": final._asdict() if final else None,
                           "history": [entry._asdict() for entry in run.train.history]}
    return report
