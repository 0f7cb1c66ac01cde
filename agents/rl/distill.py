"""Distil a trained pixel agent into a policy on frozen latents: do the latents hold what the agent acts on?

A control probe of an encoder, more direct than a linear probe and cheaper than an RL run. The teacher, a
pixel agent (``train_agent.py latent=false``), plays; the student, a latent policy built exactly as
``train_agent.py latent=true`` builds it (same encoder wrapper, standardisation and network), learns the
teacher's greedy action from the latents of the same frames by cross-entropy. Then DAgger rounds
(Ross et al., 2011): the student plays, the teacher labels the states the student reaches, and the
student learns again on everything so far. Reported per round: the student's action agreement with the
teacher on held-out frames and its whole-game return.

If the student plays as well as the teacher, the latents keep what the teacher acts on, and a gap between
RL on the latents and RL on pixels lies in the learning, not in the encoder. ``student="pixels"`` is the
control: the same distillation into a fresh pixel policy (the teacher's own architecture), so a student
that falls short of its teacher can be split into what the latents lose and what the data cannot teach.

Run directory::

    config.json, encoder.safetensors, agent.zip   the student, a run that ``load_agent`` reloads (a pixel
                                                  student has no encoder.safetensors)
    distill.json                                  teacher and per-round results
"""

from __future__ import annotations

import dataclasses
import logging
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from gymnasium import spaces
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.vec_env import VecEnv

from agents.rl.builders import build_agent
from agents.rl.callbacks import evaluate, save_model
from agents.rl.config import EncoderOptions, TrainAgentConfig
from agents.rl.envs import make_run_env, run_observations
from agents.rl.observations import LatentObservations, Observations, PixelObservations
from agents.rl.play import LoadedAgent, load_agent
from vaerl.checkpoint import CHECKPOINT_FILE, checkpoint_file
from vaerl.config import to_dict
from vaerl.errors import ConfigError
from vaerl.io import atomic_path, write_json
from vaerl.runtime import configure_threads, resolve_device, seed_everything
from vaerl.wrappers.core import LatentPipeline

log = logging.getLogger("agents")
RESULTS = "distill.json"
STUDENTS = ("latent", "pixels")
"""What the student sees: latents of a frozen encoder, or the teacher's own pixels (the control)."""


@dataclass
class DistillOptions:
    frames: int = 40_000
    """Observations (summed over envs) the teacher plays for the first dataset."""
    dagger_rounds: int = 2
    """Rounds in which the student plays and the teacher labels (0: behaviour cloning only)."""
    dagger_frames: int = 20_000
    """Observations the student plays in each DAgger round."""
    epochs: int = 10
    """Passes over the whole dataset after each round."""
    batch_size: int = 256
    lr: float = 3e-4
    holdout: float = 0.1
    """Share of each round's observations, its last ones, kept out of training to measure agreement."""
    sample: bool = True
    """The player (teacher, then student) draws its actions from its policy instead of playing greedily:
    Breakout's deterministic games bring a greedy policy back to the same states again and again."""
    eval_episodes: int = 16
    """Whole games played by the teacher and, after each round, by the student (held-out seeds)."""

    def __post_init__(self) -> None:
        if self.frames < 1 or self.dagger_frames < 1 or self.dagger_rounds < 0:
            raise ConfigError("distill.frames and distill.dagger_frames must be >= 1 and distill.dagger_rounds >= 0, "
                              f"got {self.frames}, {self.dagger_frames} and {self.dagger_rounds}")
        if not 0.0 < self.holdout < 1.0:
            raise ConfigError(f"distill.holdout must lie between 0 and 1, got {self.holdout}")
        if self.epochs < 1 or self.batch_size < 1 or self.eval_episodes < 1:
            raise ConfigError("distill.epochs, distill.batch_size and distill.eval_episodes must be >= 1")


@dataclass(kw_only=True)
class DistillConfig:
    teacher: str
    """Run directory of a trained pixel agent (``train_agent.py latent=false``)."""
    teacher_file: str = "agent.zip"
    """The teacher's model in its run directory (``checkpoints/last.zip``: an unfinished run's latest)."""
    student: str = "latent"
    """``latent``: a policy on the encoder's latents, as ``train_agent.py latent=true`` builds it; ``pixels``:
    a fresh policy on the teacher's pixels, as ``latent=false`` builds it (the control; ``encoder`` unused)."""
    encoder: EncoderOptions = field(default_factory=EncoderOptions)
    """The student's encoder and how its policy reads the latents, as in ``train_agent.py``."""
    distill: DistillOptions = field(default_factory=DistillOptions)
    seed: int = 0
    """Seeds torch, numpy, the envs and their action spaces; evaluations use the teacher run's held-out seeds."""
    device: str = "auto"
    threads: int = 0
    """Torch CPU threads (0: one for a latent student, as for frozen latents; two for a pixel one)."""
    run_dir: str | None = None
    """Output folder; ``None``: ``<teacher>/distilled/seed<seed>``."""
    overwrite: bool = False
    """Allow replacing a finished distillation in ``run_dir``."""

    def __post_init__(self) -> None:
        if self.student not in STUDENTS:
            raise ConfigError(f"student must be one of {STUDENTS}, got {self.student!r}")

    @property
    def output_dir(self) -> Path:
        return Path(self.run_dir) if self.run_dir else Path(self.teacher) / "distilled" / f"seed{self.seed}"


@dataclass
class Dataset:
    """Student observations with the teacher's actions, and which rows are held out.

    A deterministic policy in a deterministic game comes back to the same states (Breakout's ball loops), so
    held-out rows identical to a training row are not counted, as the probes drop test frames identical to
    training frames."""

    observations: list[np.ndarray] = field(default_factory=list)
    actions: list[np.ndarray] = field(default_factory=list)
    heldout: list[np.ndarray] = field(default_factory=list)
    hashes: list[np.ndarray] = field(default_factory=list)

    def add(self, observations: np.ndarray, actions: np.ndarray, holdout: float) -> None:
        """One round's rows, in the order played; its last ``holdout`` share is held out."""
        cut = round(len(observations) * (1.0 - holdout))
        self.observations.append(observations)
        self.actions.append(actions)
        self.heldout.append(np.arange(len(observations)) >= cut)
        self.hashes.append(np.array([hash(row.tobytes()) for row in observations], dtype=np.int64))

    def training(self) -> tuple[np.ndarray, np.ndarray]:
        mask = ~np.concatenate(self.heldout)
        return np.concatenate(self.observations)[mask], np.concatenate(self.actions)[mask]

    def held_out(self, last_round: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """Held-out rows unlike every training row, of all rounds or of the newest one (states the current
        actor reaches)."""
        held = np.concatenate(self.heldout)
        hashes = np.concatenate(self.hashes)
        seen = set(hashes[~held].tolist())
        new = held & np.array([h not in seen for h in hashes.tolist()], dtype=bool)
        if last_round:
            new[: len(held) - len(self.heldout[-1])] = False
        return np.concatenate(self.observations)[new], np.concatenate(self.actions)[new]

    def duplicates(self) -> int:
        """Held-out rows left out because a training row is the same."""
        return int(np.concatenate(self.heldout).sum()) - len(self.held_out()[1])


def distill_agent(cfg: DistillConfig) -> dict[str, Any]:
    """Distil ``cfg.teacher`` into a student as ``cfg`` says; returns (and writes) the results."""
    options = cfg.distill
    run_dir = cfg.output_dir
    if (run_dir / RESULTS).exists() and not cfg.overwrite:
        raise ConfigError(f"{run_dir} already holds a finished distillation ({RESULTS}); pass overwrite=true "
                          "to replace it, or choose another run_dir or seed")
    seed_everything(cfg.seed)
    device = resolve_device(cfg.device)
    teacher = load_agent(cfg.teacher, device=device, n_envs=1, file=cfg.teacher_file)
    try:
        observations, student_cfg = _student(cfg, teacher, device)
    except Exception:
        teacher.env.close()
        raise
    configure_threads(cfg.threads or observations.threads)

    n_envs, eval_seed = student_cfg.agent.n_envs, teacher.config.seed + teacher.config.eval.seed_offset
    teacher_env = make_run_env(teacher.config, teacher.observations, n_envs=n_envs, seed=cfg.seed, training=False)
    student_env = make_run_env(student_cfg, observations, n_envs=n_envs, seed=cfg.seed, training=False)
    eval_envs = [make_run_env(config, obs, n_envs=student_cfg.eval.n_envs, seed=eval_seed, training=False)
                 for config, obs in ((teacher.config, teacher.observations), (student_cfg, observations))]
    try:
        settings = student_cfg.agent.settings(student_cfg.latent)
        student = build_agent(student_cfg.agent.algo, settings, student_env,
                              policy=observations.policy(settings, student_env.observation_space), seed=cfg.seed,
                              device=device, tensorboard_log=None, extra_policy_kwargs=observations.policy_kwargs())
        observations.initialise(student, run_dir / CHECKPOINT_FILE)  # standardisation fitted on random play
        pipeline: StudentView = (FrameLatents(observations, n_envs, teacher_env.observation_space)
                                 if isinstance(observations, LatentObservations) else TeacherPixels())
        teacher_eval = evaluate(teacher.model, eval_envs[0], options.eval_episodes, eval_seed)
        log.info("teacher %s: return %.2f +- %.2f over %d games", cfg.teacher, teacher_eval["mean_return"],
                 teacher_eval["std_return"], teacher_eval["episodes"])
        rounds = dagger(teacher.model, student, teacher_env, pipeline, eval_envs[1], options, cfg.seed, eval_seed)
    finally:
        for env in (teacher_env, student_env, *eval_envs):
            env.close()
        teacher.env.close()

    _write_student(run_dir, student_cfg, student)
    results = {"teacher": {"run_dir": str(cfg.teacher), "file": cfg.teacher_file, **{k: teacher_eval[k] for k in
                                                            ("mean_return", "std_return", "returns", "episodes")}},
               "student": {"run_dir": str(run_dir), "sees": cfg.student,
                           **({"encoder": str(student_cfg.pretrained_encoder_path()),
                               "encoder_options": to_dict(cfg.encoder)} if student_cfg.latent else {})},
               "options": to_dict(options), "seed": cfg.seed, "rounds": rounds}
    write_json(run_dir / RESULTS, results)
    return results


def dagger(teacher: BaseAlgorithm, student: BaseAlgorithm, env: VecEnv, pipeline: StudentView, eval_env: VecEnv,
           options: DistillOptions, seed: int, eval_seed: int) -> list[dict[str, Any]]:
    """Behaviour cloning on the teacher's play, then ``options.dagger_rounds`` rounds of the student's play
    labelled by the teacher; after each, the student learns on everything so far and is measured."""
    optimizer = torch.optim.Adam(student.policy.parameters(), lr=options.lr)
    generator = np.random.default_rng(seed)
    data, rounds = Dataset(), []
    for round_ in range(options.dagger_rounds + 1):
        actor = teacher if round_ == 0 else student
        frames = options.frames if round_ == 0 else options.dagger_frames
        obs, actions, actor_agreement = play_and_label(teacher, actor, env, pipeline, frames, options.sample)
        data.add(obs, actions, options.holdout)
        if round_ > 0:
            log.info("round %d: the student agreed with the teacher on %.3f of the states it reached",
                     round_, actor_agreement)
        loss = fit(student, data, options, optimizer, generator)
        result = evaluate(student, eval_env, options.eval_episodes, eval_seed)
        rounds.append({"round": round_, "actor": "teacher" if round_ == 0 else "student",
                       "observations": int(sum(len(a) for a in data.actions)), "train_loss": loss,
                       "heldout_agreement": agreement(student, *data.held_out()),
                       "heldout_agreement_last_round": agreement(student, *data.held_out(last_round=True)),
                       "heldout_rows": len(data.held_out()[1]), "heldout_duplicates": data.duplicates(),
                       "actor_agreement": actor_agreement if round_ > 0 else None,
                       **{k: result[k] for k in ("mean_return", "std_return", "returns", "episodes")}})
        log.info("round %d (%s played): held-out agreement %.3f, student return %.2f +- %.2f", round_,
                 rounds[-1]["actor"], rounds[-1]["heldout_agreement"], result["mean_return"], result["std_return"])
    return rounds


def _student(cfg: DistillConfig, teacher: LoadedAgent, device: torch.device) -> tuple[Observations,
                                                                                      TrainAgentConfig]:
    """The student's observation pipeline and run config: the teacher's env and agent, ``cfg``'s encoder
    (or the teacher's pixels)."""
    if teacher.config.latent:
        raise ConfigError(f"the teacher at {cfg.teacher} is a latent=true run: distillation asks whether latents "
                          "keep what a pixel agent acts on, so the teacher must see pixels (train one with "
                          "`python scripts/train_agent.py latent=false ...`)")
    if cfg.encoder.finetune:
        raise ConfigError("distillation trains a policy on frozen latents: set encoder.finetune=false")
    if not isinstance(teacher.model.action_space, spaces.Discrete):
        raise ConfigError(f"distillation learns the teacher's action by cross-entropy, so it needs discrete "
                          f"actions; the teacher at {cfg.teacher} acts in {teacher.model.action_space}")
    latent = cfg.student == "latent"
    student_cfg = dataclasses.replace(teacher.config, latent=latent, seed=cfg.seed, run_dir=str(cfg.output_dir),
                                      overwrite=cfg.overwrite, **({"encoder": cfg.encoder} if latent else {}))
    if latent:  # among several pretraining runs: choose once, for the student's whole distillation
        student_cfg = student_cfg.with_encoder_chosen()
    observations = run_observations(student_cfg, device)  # fails on an encoder that does not fit the env
    assert isinstance(observations, LatentObservations if latent else PixelObservations)
    return observations, student_cfg


class StudentView(Protocol):
    """The student's observations of the teacher's stacked pixels, step by step (``starts``: new episodes)."""

    def newest(self, stacked: np.ndarray) -> np.ndarray: ...

    def step(self, observations: np.ndarray, starts: np.ndarray) -> tuple[np.ndarray, Any]: ...


class TeacherPixels:
    """A pixel student sees exactly what the teacher sees."""

    def newest(self, stacked: np.ndarray) -> np.ndarray:
        return stacked

    def step(self, observations: np.ndarray, starts: np.ndarray) -> tuple[np.ndarray, None]:
        return observations, None


class FrameLatents(LatentPipeline):
    """The student's latent observations of the teacher's frames, made as the student's own env wrapper
    (:class:`~vaerl.wrappers.LatentVecEnv`) makes them from raw observations: the pixel pipeline has already
    preprocessed the frames, so the newest one of each stack goes to the encoder as it is."""

    def __init__(self, observations: LatentObservations, num_envs: int, pixel_space: spaces.Space) -> None:
        encoder = observations.encoder
        super().__init__(encoder, num_envs, mode=observations.mode, stack=observations.stack,
                         stack_mode=observations.stack_mode)
        channels, height, width = encoder.spec.frame_shape
        stacked = pixel_space.shape
        if encoder.spec.frame_stack != 1 or len(stacked) != 3 or stacked[1:] != (height, width) \
                or stacked[0] % channels:
            raise ConfigError(f"the teacher sees frames of shape {stacked}, stacked along the first axis, and the "
                              f"encoder was trained on single {encoder.spec.frame_shape} frames: distillation "
                              "needs an encoder trained on the frames the teacher sees (one frame per input, the "
                              "same size and colour)")

    def newest(self, stacked: np.ndarray) -> np.ndarray:
        """The newest frame of each env's stack."""
        return stacked[:, -self.spec.channels_per_frame:]

    def images(self, observations: Any) -> np.ndarray:
        return np.asarray(observations)


def play_and_label(teacher: BaseAlgorithm, actor: BaseAlgorithm, env: VecEnv, pipeline: StudentView,
                   frames: int, sample: bool) -> tuple[np.ndarray, np.ndarray, float]:
    """``frames`` observations of ``actor`` playing ``env`` (the teacher's pixels): the student's
    observations of them (``pipeline``, as the student's own env wrapper makes them), the teacher's greedy
    actions, and how often the actor's greedy action was the teacher's. With ``sample`` the actor plays
    actions drawn from its policy, so play leaves a deterministic policy's loops."""
    pixels = env.reset()
    latents, _ = pipeline.step(pipeline.newest(pixels), np.ones(env.num_envs, bool))
    observations, labels, agreed = [], [], 0
    for _ in range(-(-frames // env.num_envs)):
        label, action = greedy_and_played(teacher, pixels, sample)
        if actor is not teacher:
            greedy, action = greedy_and_played(actor, latents, sample)
            agreed += int(np.sum(greedy == label))
        observations.append(latents)
        labels.append(label)
        pixels, _, dones, _ = env.step(action)
        latents, _ = pipeline.step(pipeline.newest(pixels), dones)
    total = len(labels) * env.num_envs
    agreement = 1.0 if actor is teacher else agreed / total
    return np.concatenate(observations)[:frames], np.concatenate(labels)[:frames], agreement


@torch.no_grad()
def greedy_and_played(model: BaseAlgorithm, observations: np.ndarray, sample: bool) -> tuple[np.ndarray, np.ndarray]:
    """The policy's greedy actions and the actions it plays: drawn from the policy with ``sample``, else greedy."""
    tensor, _ = model.policy.obs_to_tensor(observations)
    distribution = model.policy.get_distribution(tensor)
    greedy = distribution.mode().cpu().numpy()
    return greedy, distribution.sample().cpu().numpy() if sample else greedy


def fit(student: BaseAlgorithm, data: Dataset, options: DistillOptions, optimizer: torch.optim.Optimizer,
        generator: np.random.Generator) -> float:
    """``options.epochs`` passes of cross-entropy to the teacher's actions; the last epoch's mean loss."""
    observations, actions = data.training()
    policy = student.policy
    policy.set_training_mode(True)
    losses: list[float] = []
    for _ in range(options.epochs):
        losses = []
        for batch in np.array_split(generator.permutation(len(actions)), max(1, len(actions) // options.batch_size)):
            obs = torch.as_tensor(observations[batch], device=student.device)
            target = torch.as_tensor(actions[batch], device=student.device).long()
            loss = -policy.get_distribution(obs).log_prob(target).mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
    policy.set_training_mode(False)
    return float(np.mean(losses))


def agreement(student: BaseAlgorithm, observations: np.ndarray, actions: np.ndarray) -> float:
    """Share of ``observations`` where the student's greedy action is the teacher's."""
    if len(actions) == 0:
        return float("nan")
    predicted = np.concatenate([student.predict(part, deterministic=True)[0]
                                for part in np.array_split(observations, max(1, len(observations) // 4096))])
    return float(np.mean(predicted == actions))


def _write_student(run_dir: Path, cfg: TrainAgentConfig, student: BaseAlgorithm) -> None:
    """The student as a run directory: ``load_agent(run_dir)`` reloads it (a latent one with its own encoder)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    if cfg.latent:
        with atomic_path(run_dir / CHECKPOINT_FILE) as tmp:
            shutil.copyfile(checkpoint_file(cfg.pretrained_encoder_path()), tmp)
    write_json(run_dir / "config.json", to_dict(cfg))
    save_model(student, run_dir / "agent.zip")
