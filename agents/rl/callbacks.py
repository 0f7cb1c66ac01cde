"""Training callbacks: evaluation on held-out seeds and resumable checkpoints, all written atomically."""

from __future__ import annotations

import json
import logging
import time
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.evaluation import evaluate_policy
from stable_baselines3.common.off_policy_algorithm import OffPolicyAlgorithm
from stable_baselines3.common.on_policy_algorithm import OnPolicyAlgorithm
from stable_baselines3.common.vec_env import VecEnv

from vaerl.io import atomic_path, write_json
from vaerl.progress import PROGRESS_SECONDS, TrainingClock
from vaerl.stop import StopRequest

CHECKPOINT = "checkpoints/last.zip"
LEGACY_REPLAY_BUFFER = "checkpoints/last_replay_buffer.pkl"  # the one name older vaerl wrote buffers under

log = logging.getLogger("agents")


def evaluate(model: BaseAlgorithm, env: VecEnv, episodes: int, seed: int, deterministic: bool = True) -> dict[str, Any]:
    """Mean and std of the (unclipped, whole-game) return over ``episodes`` episodes from seed ``seed`` on."""
    env.seed(seed)  # the same held-out starts at every evaluation, for every run
    start = time.perf_counter()
    returns, lengths = evaluate_policy(model, env, n_eval_episodes=episodes, deterministic=deterministic,
                                       return_episode_rewards=True, warn=False)
    return {
        "mean_return": float(np.mean(returns)), "std_return": float(np.std(returns)),
        "mean_length": float(np.mean(lengths)), "episodes": len(returns),
        "returns": [float(r) for r in returns], "lengths": [int(n) for n in lengths],
        "seed": seed, "deterministic": deterministic, "seconds": round(time.perf_counter() - start, 2),
    }


def checkpoint_steps(run_dir: Path) -> int:
    """The agent steps of the last checkpoint (0 for none), as its model records them."""
    path = Path(run_dir) / CHECKPOINT
    return saved_steps(path) if path.exists() else 0


def replay_buffer_file(run_dir: Path, steps: int) -> Path:
    """Where the checkpoint of ``steps`` agent steps keeps its replay buffer: named by its step, so a buffer is
    only ever read with the model it was saved with."""
    return Path(run_dir) / f"checkpoints/replay_buffer_{steps}.pkl"


def checkpoint_replay_buffer(run_dir: Path) -> Path | None:
    """The replay buffer of the last checkpoint, if it has one."""
    candidates = (replay_buffer_file(run_dir, checkpoint_steps(run_dir)), Path(run_dir) / LEGACY_REPLAY_BUFFER)
    return next((path for path in candidates if path.exists()), None)


def saved_steps(path: Path) -> int:
    """The agent steps of a model saved by SB3 (read from its zip's ``data`` JSON, nothing unpickled)."""
    with zipfile.ZipFile(path) as archive:
        return int(json.loads(archive.read("data"))["num_timesteps"])


def model_state_file(path: Path) -> Path:
    """Beside a saved model (``agent.zip``), how far and how long it had trained (``agent.json``)."""
    return Path(path).with_suffix(".json")


def save_model(model: BaseAlgorithm, path: Path, train_seconds: float | None = None) -> None:
    """``model.save`` to a temporary name, then one rename: a reader never sees half a zip. With ``train_seconds``,
    its steps and training seconds follow in :func:`model_state_file`."""
    with atomic_path(path) as tmp:  # its ".tmp" suffix stops SB3 from appending ".zip"
        model.save(tmp)
    if train_seconds is not None:
        write_json(model_state_file(path), {"num_timesteps": model.num_timesteps,
                                            "train_seconds": round(train_seconds, 1)})


def saved_seconds(path: Path) -> float | None:
    """The training seconds recorded beside the model saved at ``path``: ``None`` without a record of that very
    model (none, or one of another step: the process died between the two writes); 0 for a record older than the
    clock."""
    state_file = model_state_file(path)
    if not (Path(path).exists() and state_file.exists()):
        return None
    state = json.loads(state_file.read_text())
    return float(state.get("train_seconds", 0.0)) if state["num_timesteps"] == saved_steps(path) else None


class PeriodicEval(BaseCallback):
    """Every ``every`` agent steps: evaluate, log ``eval/*`` to TensorBoard, append to ``evaluations.json``."""

    def __init__(self, env: VecEnv, path: Path, *, every: int, episodes: int, seed: int, deterministic: bool,
                 clock: TrainingClock | None = None, stop: StopRequest | None = None) -> None:
        super().__init__()
        self.env, self.path, self.every, self.episodes = env, Path(path), every, episodes
        self.clock = clock or TrainingClock()
        self.stop = stop  # once a stop is asked for, no evaluation starts: a scheduler's grace period is short
        self.seed, self.deterministic = seed, deterministic
        self.history: list[dict[str, Any]] = json.loads(self.path.read_text()) if self.path.exists() else []
        self._next = 0

    def _on_training_start(self) -> None:
        # a run resumed from a checkpoint behind its last evaluations drops them: they evaluated steps it goes back on
        kept = [entry for entry in self.history if entry["step"] <= self.num_timesteps]
        if len(kept) < len(self.history):
            log.info("resuming from step %d: dropping %d evaluations made after it", self.num_timesteps,
                     len(self.history) - len(kept))
            self.history = kept
            write_json(self.path, self.history)
        done = max(self.history[-1]["step"] if self.history else 0, self.num_timesteps)
        self._next = (done // self.every + 1) * self.every

    def _on_step(self) -> bool:
        if self.num_timesteps >= self._next and not (self.stop and self.stop.requested):
            self._next += self.every
            train_seconds = round(self.clock.seconds(), 1)  # before evaluating: the curve's x, not its cost
            result = evaluate(self.model, self.env, self.episodes, self.seed, self.deterministic)
            self.history.append({"step": self.num_timesteps, "train_seconds": train_seconds, **result})
            write_json(self.path, self.history)
            self.logger.record("eval/mean_return", result["mean_return"])
            self.logger.record("eval/std_return", result["std_return"])
            self.logger.record("eval/mean_length", result["mean_length"])
            self.logger.dump(self.num_timesteps)
        return True


class ResumableCheckpoint(BaseCallback):
    """Every ``every`` agent steps (and when interrupted), save what ``train_agent`` needs to resume.

    Saves happen as a rollout starts, the one moment when every step counted so far has been stored and trained
    on: SB3 calls ``on_step`` before the step reaches the rollout buffer, so a save there would count steps that
    a resumed run never trains on.
    """

    def __init__(self, run_dir: Path, every: int, clock: TrainingClock | None = None) -> None:
        super().__init__()
        self.run_dir, self.every = Path(run_dir), every
        self.clock = clock or TrainingClock()
        self._last = self._rollout_start = 0

    def _on_training_start(self) -> None:
        self._last = self._rollout_start = self.num_timesteps

    def _on_rollout_start(self) -> None:
        self._rollout_start = self.num_timesteps
        if self.num_timesteps - self._last >= self.every:
            self.save()

    def _on_step(self) -> bool:
        return True

    def save(self) -> None:
        self._last = self.num_timesteps
        save_checkpoint(self.model, self.run_dir, self.clock.seconds())

    def save_interrupted(self, stopped_by_callback: bool = False) -> None:
        """Save part-way through a rollout. An on-policy algorithm has not trained on the rollout's steps, and a
        resumed run starts a new rollout, so the checkpoint counts the steps up to the rollout's start (the weights
        are the same). An off-policy algorithm has stored the steps in its replay buffer and keeps them, all but
        the last when a callback stopped it (``stopped_by_callback``): SB3 counts a step before its callbacks
        and stores it after them."""
        if isinstance(self.model, OnPolicyAlgorithm):
            self.model.num_timesteps = self._rollout_start
        elif stopped_by_callback:
            self.model.num_timesteps -= self.model.n_envs
        self.save()


def save_checkpoint(model: BaseAlgorithm, run_dir: Path, train_seconds: float) -> None:
    """The model (and replay buffer of off-policy algorithms) under ``run_dir/checkpoints``, and how far and how
    long it had trained.

    Each file is written atomically, and a process that dies between them leaves a consistent checkpoint: the
    buffer goes first under its step's name (the previous model keeps reading its own), then the model, whose
    step is the checkpoint's; older buffers are removed only after that.
    """
    buffer = replay_buffer_file(run_dir, model.num_timesteps)
    if isinstance(model, OffPolicyAlgorithm):
        with atomic_path(buffer) as tmp:
            model.save_replay_buffer(tmp)
    save_model(model, run_dir / CHECKPOINT, train_seconds)
    for old in [*buffer.parent.glob("replay_buffer_*.pkl"), Path(run_dir) / LEGACY_REPLAY_BUFFER]:
        if old != buffer:
            old.unlink(missing_ok=True)


class StopWhenAsked(BaseCallback):
    """Ends ``learn`` at the step where a stop was asked for (SIGTERM or Ctrl-C, see :mod:`vaerl.stop`)."""

    def __init__(self, stop: StopRequest) -> None:
        super().__init__()
        self.stop = stop
        self.stopped = False
        """Whether it ended ``learn`` (a stop asked for during the last update comes too late for that)."""

    def _on_step(self) -> bool:
        self.stopped = self.stop.requested
        return not self.stopped


class ProgressLog(BaseCallback):
    """A log line every ``every_seconds`` and at the end: steps done, speed, mean return of recent episodes.

    It stands in for SB3's progress bar where nobody watches a terminal (a batch job's log file).
    """

    def __init__(self, total_steps: int, every_seconds: float = PROGRESS_SECONDS) -> None:
        super().__init__()
        self.total_steps, self.every_seconds = total_steps, every_seconds
        self._start_steps, self._start, self._last = 0, 0.0, 0.0

    def _on_training_start(self) -> None:
        self._start_steps = self.num_timesteps
        self._start = self._last = time.perf_counter()

    def _on_step(self) -> bool:
        if time.perf_counter() - self._last >= self.every_seconds:
            self.report()
        return True

    def _on_training_end(self) -> None:
        self.report()

    def report(self) -> None:
        self._last = time.perf_counter()
        fps = (self.num_timesteps - self._start_steps) / max(self._last - self._start, 1e-9)
        returns = [float(info["r"]) for info in self.model.ep_info_buffer or []]
        recent = (f"return {np.mean(returns):.2f} (last {len(returns)} episodes)" if returns
                  else "no finished episode yet")
        log.info("step %d/%d  %.0f fps  %s", self.num_timesteps, self.total_steps, fps, recent)
