"""``train_agent(cfg)``: an SB3 agent on encoder latents or on pixels, evaluated, checkpointed and filmed.

Run directory (``cfg.output_dir``)::

    config.json            the resolved config (what load_agent rebuilds the env from)
    encoder.safetensors    a copy of the encoder (latent runs), so the agent reloads with its own
    agent.zip              the final SB3 model
    agent.json             its steps and training seconds (what a run stopped before eval.json goes on from)
    checkpoints/last.zip   the latest periodic checkpoint (+ replay buffer for off-policy algorithms)
    evaluations.json       periodic evaluations on held-out seeds
    eval.json              the final evaluation: mean and std of the whole-game, unclipped return
    play.mp4               the agent playing, frame beside reconstruction (play.gif without an MP4 writer)
    tb/                    TensorBoard logs

A run stopped part-way resumes from its checkpoint when the same command runs again. A finished run trains
further when the command asks for more ``total_steps`` than it reached (see :class:`RunStart`).
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import logging
import shutil
import sys
from enum import Enum
from pathlib import Path
from typing import Any

import torch
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.logger import TensorBoardOutputFormat
from stable_baselines3.common.off_policy_algorithm import OffPolicyAlgorithm
from stable_baselines3.common.utils import configure_logger
from torch.utils.tensorboard import SummaryWriter

from agents.rl.builders import algorithm_class, build_agent, check_action_space, set_schedules
from agents.rl.callbacks import (
    CHECKPOINT,
    PeriodicEval,
    ProgressLog,
    ResumableCheckpoint,
    StopWhenAsked,
    checkpoint_replay_buffer,
    checkpoint_steps,
    evaluate,
    model_state_file,
    save_model,
    saved_seconds,
    saved_steps,
)
from agents.rl.config import EvalConfig, TrainAgentConfig
from agents.rl.envs import make_run_env, run_observations
from agents.rl.observations import Observations
from agents.rl.video import record_play
from agents.safe_load import load_algorithm, load_replay_buffer
from vaerl.checkpoint import CHECKPOINT_FILE, checkpoint_file
from vaerl.config import to_dict
from vaerl.errors import ConfigError
from vaerl.io import atomic_path, write_json
from vaerl.progress import TrainingClock
from vaerl.runtime import configure_threads, resolve_device, seed_everything
from vaerl.stop import RunStopped, StopRequest

log = logging.getLogger("agents")
FINISHED = "eval.json"
FINAL_MODEL = "agent.zip"
PLAY_VIDEO = "play.mp4"


class RunStart(Enum):
    """How ``train_agent`` starts in its run directory."""

    FRESH = "fresh"
    """An empty directory, or ``overwrite=true``: outputs of an earlier run there are removed."""
    RESUME = "resume"
    """An unfinished run: continue from ``checkpoints/last.zip``, as if it had never stopped."""
    EXTEND = "extend"
    """A finished run asked for more ``total_steps`` than it reached: continue from its ``agent.zip``. Schedules
    that decay with progress (RL Zoo's ``lin_2.5e-4``) follow the new total from where the run stands, so they
    jump back up: an extended run is not the run that had planned the longer budget from its start, unless both
    stages name that budget as ``schedule_steps``."""


def train_agent(cfg: TrainAgentConfig) -> dict[str, Any]:
    """Train, evaluate and film an agent as ``cfg`` says; returns the final evaluation and speed."""
    run_dir = cfg.output_dir
    start = run_start(run_dir, cfg)
    resume = start is not RunStart.FRESH
    if resume and cfg.latent and (run_dir / CHECKPOINT_FILE).exists():
        # a resumed run keeps the encoder it started with
        own = str(run_dir / CHECKPOINT_FILE)
        cfg = dataclasses.replace(cfg, encoder=dataclasses.replace(cfg.encoder, path=own))
    if cfg.latent:  # among several pretraining runs: choose once, and write the choice into config.json
        cfg = cfg.with_encoder_chosen()
    if resume and cfg.eval.deterministic is None:
        cfg = dataclasses.replace(cfg, eval=_saved_evaluation(run_dir, cfg.eval))
    source = _start_model(run_dir, start)
    # a resumed run plays on from new games and draws, not from those of step 0 again (evaluations keep theirs)
    train_seed = cfg.seed + (saved_steps(source) if source is not None else 0)
    seed_everything(train_seed)
    device = resolve_device(cfg.device)
    algorithm_class(cfg.agent.algo)

    # everything that can be wrong with the inputs fails here, before any file is written
    observations = run_observations(cfg, device)
    configure_threads(cfg.threads or observations.threads)
    env = make_run_env(cfg, observations, n_envs=cfg.agent.n_envs, seed=train_seed, training=True)
    eval_env = None
    try:
        check_action_space(cfg.agent.algo, env.action_space, cfg.env.id)
        eval_seed = cfg.seed + cfg.eval.seed_offset
        eval_env = make_run_env(cfg, observations, n_envs=cfg.eval.n_envs, seed=eval_seed, training=False)
        settings = cfg.agent.settings(cfg.latent)
        policy = observations.policy(settings, env.observation_space)

        _write_inputs(run_dir, cfg, observations, fresh=not resume)
        model = _load_or_build(cfg, run_dir, env, observations, settings, policy, device, start, source)
        start_steps = model.num_timesteps
        clock = TrainingClock(_seconds_before(run_dir, start, source))
        late_stop = _learn(model, cfg, run_dir, eval_env, eval_seed, clock)
        seconds, train_seconds = clock.session_seconds(), round(clock.seconds(), 1)
        save_model(model, run_dir / FINAL_MODEL, train_seconds)
        if late_stop is not None:
            raise RunStopped(late_stop, f"training finished its {model.num_timesteps} steps and stopped before its "
                                        f"final evaluation; run the same command again to evaluate {run_dir}")

        final = evaluate(model, eval_env, cfg.eval.final_episodes, eval_seed, cfg.eval.is_deterministic(cfg.env))
        result = {
            **final, "env": cfg.env.id, "algo": cfg.agent.algo, "latent": cfg.latent, "seed": cfg.seed,
            "finetune": cfg.latent and cfg.encoder.finetune, "device": str(device),
            "total_steps": model.num_timesteps, "resumed_from": start_steps,
            "train_seconds": train_seconds,  # over every resumption
            "fps": round((model.num_timesteps - start_steps) / max(seconds, 1e-9), 1),  # this last session's
        }
    finally:
        env.close()
        if eval_env is not None:
            eval_env.close()
    if cfg.video.steps > 0:
        video_env = make_run_env(cfg, observations, n_envs=1, seed=eval_seed, training=False)
        try:
            result["video"] = record_play(model, video_env, observations, run_dir / PLAY_VIDEO, steps=cfg.video.steps,
                                          fps=cfg.video.fps, scale=cfg.video.scale)
        finally:
            video_env.close()
    write_json(run_dir / FINISHED, result)
    log.info("%s %s latent=%s: return %.2f +- %.2f over %d episodes (%s)", cfg.agent.algo, cfg.env.name, cfg.latent,
             result["mean_return"], result["std_return"], result["episodes"], run_dir)
    return result


def run_start(run_dir: Path, cfg: TrainAgentConfig) -> RunStart:
    """How to start in ``run_dir``; refuses to replace a finished run unless ``overwrite=true``."""
    if cfg.overwrite:
        return RunStart.FRESH
    if (run_dir / FINISHED).exists():
        reached = int(json.loads((run_dir / FINISHED).read_text())["total_steps"])
        further = (f"pass total_steps above {reached} (and resume=true) to train it further, "
                   if (run_dir / FINAL_MODEL).exists() else "")
        if cfg.total_steps <= reached or not cfg.resume or not further:
            raise ConfigError(f"{run_dir} already holds a finished run ({FINISHED}, {reached} steps); {further}pass "
                              "overwrite=true to replace it, or choose another run_dir or seed")
        # an extension that was itself interrupted resumes from its checkpoint
        return RunStart.RESUME if checkpoint_steps(run_dir) > reached else RunStart.EXTEND
    # a final model without eval.json: the run stopped in its final evaluation, which a resume makes again
    has_checkpoint = (run_dir / CHECKPOINT).exists() or (run_dir / FINAL_MODEL).exists()
    if has_checkpoint and not cfg.resume:
        raise ConfigError(f"{run_dir} holds an unfinished run; pass resume=true to continue it or overwrite=true "
                          "to start again")
    return RunStart.RESUME if has_checkpoint else RunStart.FRESH


def _start_model(run_dir: Path, start: RunStart) -> Path | None:
    """The saved model a run goes on from (``None`` for a fresh run): an extension's finished ``agent.zip``; for a
    resume the last checkpoint, or ``agent.zip`` where the run stopped after saving it (in its final evaluation or
    video)."""
    final, checkpoint = run_dir / FINAL_MODEL, run_dir / CHECKPOINT
    if start is RunStart.FRESH:
        return None
    if start is RunStart.EXTEND:
        return final
    if final.exists() and (not checkpoint.exists() or saved_steps(final) >= checkpoint_steps(run_dir)):
        return final
    return checkpoint


def _seconds_before(run_dir: Path, start: RunStart, source: Path | None) -> float:
    """Training seconds the run had spent before this process (0 for a fresh run): what was recorded beside the
    model it goes on from."""
    if source is None:
        return 0.0
    seconds = saved_seconds(source)
    if seconds is None:  # no record of that very model (older vaerl, or a death between the writes): the last one
        seconds = (float(json.loads((run_dir / FINISHED).read_text()).get("train_seconds", 0.0))
                   if start is RunStart.EXTEND else saved_seconds(run_dir / CHECKPOINT))
    return seconds or 0.0


def _saved_evaluation(run_dir: Path, current: EvalConfig) -> EvalConfig:
    """A resumed run goes on evaluating as it started (greedy or sampled), unless the command says otherwise."""
    path = run_dir / "config.json"
    saved = json.loads(path.read_text()).get("eval", {}) if path.exists() else {}
    return dataclasses.replace(current, deterministic=saved.get("deterministic"))


def _write_inputs(run_dir: Path, cfg: TrainAgentConfig, observations: Observations, fresh: bool) -> None:
    if fresh:  # outputs of an earlier run that overwrite=true replaces
        for name in (FINISHED, FINAL_MODEL, model_state_file(FINAL_MODEL), "evaluations.json", PLAY_VIDEO, "play.gif"):
            (run_dir / name).unlink(missing_ok=True)
        for name in ("checkpoints", "tb"):
            shutil.rmtree(run_dir / name, ignore_errors=True)
    if observations.encoder is not None:
        source = checkpoint_file(cfg.pretrained_encoder_path())
        target = run_dir / CHECKPOINT_FILE
        if source.resolve() != target.resolve():
            with atomic_path(target) as tmp:
                shutil.copyfile(source, tmp)
    write_json(run_dir / "config.json", to_dict(cfg))


def _load_or_build(
    cfg: TrainAgentConfig, run_dir: Path, env: Any, observations: Observations, settings: dict[str, Any],
    policy: str, device: torch.device, start: RunStart, source: Path | None,
) -> BaseAlgorithm:
    tensorboard = str(run_dir / "tb")
    if source is not None:
        model = load_algorithm(algorithm_class(cfg.agent.algo), source, env=env, device=device,
                               tensorboard_log=tensorboard)
        # an extended off-policy run takes the last checkpoint's buffer, a few thousand steps behind its model
        buffer = checkpoint_replay_buffer(run_dir)
        if isinstance(model, OffPolicyAlgorithm) and buffer is not None:
            load_replay_buffer(model, buffer)
        _continue_tensorboard(model, tensorboard, cfg.agent.algo)
        set_schedules(model, settings, cfg.schedule_horizon)
        if start is RunStart.EXTEND and cfg.schedule_steps is None:
            log.warning("extending the finished run %s from step %d to %d: schedules that decay with progress "
                        "restart from %.0f%% of the way (pass schedule_steps to plan them for a longer run from the "
                        "start)", run_dir, model.num_timesteps, cfg.total_steps, 100 * model.num_timesteps / cfg.total_steps)
        elif start is RunStart.EXTEND:
            log.info("extending the finished run %s from step %d to %d, its schedules planned for %d steps",
                     run_dir, model.num_timesteps, cfg.total_steps, cfg.schedule_steps)
        else:
            log.info("resuming %s from step %d", source, model.num_timesteps)
        return model
    model = build_agent(cfg.agent.algo, settings, env, policy=policy, seed=cfg.seed, device=device,
                        tensorboard_log=tensorboard, extra_policy_kwargs=observations.policy_kwargs(),
                        horizon=cfg.schedule_horizon)
    observations.initialise(model, run_dir / CHECKPOINT_FILE)
    log.info("%s reads the observations with %s", policy, type(model.policy.features_extractor).__name__)
    return model


def _continue_tensorboard(model: BaseAlgorithm, folder: str, name: str) -> None:
    """Log a resumed run into the TensorBoard folder SB3 would pick, hiding what the stopped process logged past the
    checkpoint's step (``purge_step``): those steps are trained again, and would otherwise show twice."""
    logger = configure_logger(model.verbose, folder, name, reset_num_timesteps=False)
    for output in logger.output_formats:
        if isinstance(output, TensorBoardOutputFormat):
            output.writer.close()
            output.writer = SummaryWriter(output.writer.log_dir, purge_step=model.num_timesteps + 1)
    model.set_logger(logger)


def _learn(model: BaseAlgorithm, cfg: TrainAgentConfig, run_dir: Path, eval_env: Any, eval_seed: int,
           clock: TrainingClock) -> int | None:
    """Train up to ``cfg.total_steps``. A stop asked for (SIGTERM, Ctrl-C) ends training at the next step with a
    checkpoint and raises :class:`RunStopped`; one that came as the last update ran is returned (its signal)."""
    remaining = cfg.total_steps - model.num_timesteps
    if remaining <= 0:
        return None
    stop = StopRequest()
    checkpoint = ResumableCheckpoint(run_dir, cfg.checkpoint_every, clock)
    callbacks = [checkpoint]
    if cfg.eval.every > 0:
        callbacks.append(PeriodicEval(eval_env, run_dir / "evaluations.json", every=cfg.eval.every,
                                      episodes=cfg.eval.episodes, seed=eval_seed,
                                      deterministic=cfg.eval.is_deterministic(cfg.env), clock=clock, stop=stop))
    progress_bar = cfg.progress_bar and sys.stdout.isatty()  # a log file gets progress lines instead
    if progress_bar and importlib.util.find_spec("rich") is None:
        log.warning("no progress bar: SB3's needs `pip install rich tqdm`")
        progress_bar = False
    if not progress_bar:
        callbacks.append(ProgressLog(cfg.total_steps))
    stopper = StopWhenAsked(stop)
    with stop:
        try:
            model.learn(remaining, callback=[*callbacks, stopper], progress_bar=progress_bar,
                        tb_log_name=cfg.agent.algo, reset_num_timesteps=model.num_timesteps == 0)
        except KeyboardInterrupt:  # a second Ctrl-C, or one where the stop request cannot listen
            checkpoint.save_interrupted()
            log.warning("interrupted: checkpoint saved at step %d, run the same command again to resume",
                        model.num_timesteps)
            raise
    if stopper.stopped:  # learn ended at a step, before training on what it was collecting
        checkpoint.save_interrupted(stopped_by_callback=True)
        raise RunStopped(stop.signal_number, f"training stopped at step {model.num_timesteps} of {cfg.total_steps} "
                                             f"with its checkpoint saved in {run_dir}; run the same command again "
                                             "to resume")
    return stop.signal_number
