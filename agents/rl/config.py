"""Typed configuration of ``scripts/train_agent.py``. YAML defaults live in ``configs/``; these are the schema."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agents.rl.features import (
    CELL_CONV_FEATURES,
    CELL_CONV_SPREAD,
    CELL_CONV_WIDTHS,
    PROJECTION_SCALES,
    STANDARDIZE_FLOOR,
)
from vaerl.checkpoint import CHECKPOINT_FILE
from vaerl.encoder import MODES
from vaerl.envs.make import EnvConfig
from vaerl.errors import ConfigError
from vaerl.paths import DATA_ROOT, RUNS_ROOT, agent_run_dir, pretrain_run_dir, pretrained_encoder_path
from vaerl.training.pretrain import most_informative_run
from vaerl.wrappers import STACK_MODES


@dataclass
class PathsConfig:
    runs: str = RUNS_ROOT
    """Root of run directories (pretrained encoders are looked up under ``<runs>/pretrain``)."""
    data: str = DATA_ROOT


@dataclass
class AgentConfig:
    """One algorithm's settings. They live in ``configs/agent/<name>.yaml`` only, so nothing here has a default
    (an empty dict: no settings of that kind)."""

    name: str
    """Label used in the run directory."""
    algo: str
    """Stable-Baselines3 algorithm: ppo | a2c | dqn (discrete actions) | sac | td3 (continuous actions)."""
    n_envs: int
    """Parallel envs collecting experience."""
    hyperparams: dict[str, Any] = field(default_factory=dict)
    """Constructor arguments shared by pixel and latent runs; ``lin_<x>`` is a linear schedule from x to 0."""
    pixel: dict[str, Any] = field(default_factory=dict)
    """Overrides of ``hyperparams`` for ``latent=false`` (the RL Zoo's pixel settings); ``policy`` defaults to
    the pipeline's (CnnPolicy on pixels, MlpPolicy on observations without images)."""
    latent: dict[str, Any] = field(default_factory=dict)
    """Overrides of ``hyperparams`` for ``latent=true``; ``policy`` defaults to MlpPolicy."""

    def settings(self, latent: bool) -> dict[str, Any]:
        """The constructor arguments of this run (a new dict)."""
        return {**self.hyperparams, **(self.latent if latent else self.pixel)}


@dataclass
class EncoderOptions:
    path: str | None = None
    """Encoder checkpoint (file or pretraining run dir); ``None``: the one ``scripts/pretrain_vae.py`` wrote."""
    model: str = "vae"
    """Model kind of the pretraining run to look up when ``path`` is ``None``."""
    seed: int | list[int] = 0
    """Seed of the pretraining run to look up when ``path`` is ``None``; a list of seeds (``encoder.seed=[0,1,2]``, runs
    of ``pretrain_vae.py -m seed=0,1,2``) takes the one whose Gaussian part carries the most information (validation
    KL, :func:`vaerl.training.pretrain.most_informative_run`)."""
    mode: str = "mean"
    """Latent fed to the agent: mean | sample (VAE) | indices (VQ-VAE codes)."""
    stack: int = 4
    """Consecutive latents per observation (motion), like the pixel baseline's 4 stacked frames."""
    stack_mode: str = "concat"
    """``concat``: the last ``stack`` latents; ``delta``: latent and its change since the last step."""
    standardize: bool = True
    """Standardise the latents in the policy with statistics of random play, fitted before training and then
    fixed (:class:`agents.rl.features.StandardizedLatents`). Frozen encoders only: a fine-tuned one
    (``finetune``) learns its own scale, and the setting does not apply to it."""
    standardize_floor: float = STANDARDIZE_FLOOR
    """Least spread ``standardize`` divides a number by (:data:`agents.rl.features.STANDARDIZE_FLOOR`): smaller, and
    the policy sees the small variations of a VAE's collapsed dimensions at unit spread."""
    projection_scale: str = "number"
    """How ``standardize`` scales the latents' frame projections (a VAE's foreground row and column sums): ``axis``,
    one scale per axis (their spread over all places), so a column keeps its shape however many bricks are
    gone; ``number``, each number by its own spread, as every other number (the default: on Breakout ``axis``
    learned no better, BENCHMARKS.md)."""
    projection_blur: float = 0.0
    """Blur each frame projection along its axis by a Gaussian of this many places before standardising
    (:func:`agents.rl.features.projection_blur_matrix`): coarse coding, so that what the policy's MLP learns
    about a ball in one column carries over to the next. 0: no blur."""
    projection_keypoints: int = 0
    """Learned places along each axis, per stacked latent, beside the standardised latents: this many 1-D
    filters per axis score the places of the frame projections, and each gives the softmax-weighted mean
    place as one number in [-1, 1] (:class:`agents.rl.features.ProjectionKeypoints`), so the policy reads where
    the ball is as a number rather than as which input is lit. 0: none."""
    projection_shift: int = 0
    """Augmentation while the policy learns: every sample's frame projections move along each axis by a random
    whole number of places up to this (:func:`agents.rl.features.shift_projections`; RAD / DrQ's random
    translation, on projections). Rollouts, evaluation and play see the latents as they are. 0: none."""
    shared_layers: list[int] = field(default_factory=list)
    """Widths of ReLU layers after the standardisation that the policy and value heads share, as the pixel
    policy shares NatureCNN and its 512-unit layer; the heads on top are then linear, and the agent's
    ``net_arch`` does not apply. Empty: the heads' own MLPs (``net_arch``) read the latents."""
    projection_conv: bool = False
    """Read the latents' frame projections (a VAE's foreground row and column sums) with 1-D convolutions shared
    along each axis, as the pixel baseline's NatureCNN reads frames, and standardise the other numbers
    (:class:`agents.rl.features.ProjectionConvFeatures`). Frozen encoders with projections only."""
    cell_conv: bool | str = "auto"
    """Read the latents' grid of foreground cells (``model.foreground_cells``) with 2-D convolutions, as the
    pixel baseline's NatureCNN reads frames, and standardise the other numbers; one shared ReLU layer and
    linear heads, as on pixels (:class:`agents.rl.features.CellConvFeatures`). ``auto``: whenever the latents
    have cells and no other reading is asked for (:meth:`other_reading`); ``true``: always (frozen encoders
    with cells only); ``false``: never (the MLP reads the cells as numbers)."""
    cell_conv_widths: list[int] = field(default_factory=lambda: list(CELL_CONV_WIDTHS))
    """Filters of ``cell_conv``'s 3 x 3 convolutions: the first keeps the grid's size, each further one halves it."""
    cell_conv_features: int = CELL_CONV_FEATURES
    """Width of the ReLU layer that joins ``cell_conv``'s convolutions and the other numbers."""
    cell_conv_motion: bool = False
    """``cell_conv`` also reads each stacked grid's change from the one before, as channels of their own."""
    cell_conv_spread: float = CELL_CONV_SPREAD
    """The cells' spread over random play as ``cell_conv`` reads them (:data:`agents.rl.features.CELL_CONV_SPREAD`):
    1 standardises them; 0.1 reads a paddle near 1, as NatureCNN reads pixels."""
    cell_conv_asinh: bool = False
    """``cell_conv`` reads each scaled cell through ``asinh`` (linear near zero, logarithmic beyond), so a ball's few
    pixels are not dwarfed by the paddle or a hole in the wall (:class:`agents.rl.features.CellConvFeatures`)."""
    finetune: bool = False
    """Put the encoder inside the policy and train it with the policy (else: frozen, encoded in the env wrapper)."""
    preprocess: dict[str, Any] = field(default_factory=dict)
    """Overrides of the checkpoint's preprocessing spec (``source_shape``, ``layout``, ``image_key``, ...)."""

    def other_reading(self, reader: str = "cell_conv") -> str | None:
        """The first option set that reads the latents otherwise than ``reader`` (``cell_conv`` or
        ``projection_conv``, which read frozen, stacked mean latents and standardise them themselves) does, as
        ``name=value``, or None. ``cell_conv=auto`` leaves the cells to the MLP when there is one."""
        asked = {"finetune": self.finetune, "standardize": not self.standardize, "mode": self.mode != "mean",
                 "stack_mode": self.stack_mode != "concat", "projection_scale": self.projection_scale != "number",
                 "projection_blur": self.projection_blur,
                 "projection_keypoints": self.projection_keypoints, "projection_shift": self.projection_shift,
                 "shared_layers": self.shared_layers, "projection_conv": self.projection_conv}
        for name, value in asked.items():
            if value and name != reader:
                return f"{name}={getattr(self, name)}"
        return None

    def reads_cells(self, has_cells: bool) -> bool:
        """Whether latents with (``has_cells``) or without a grid of cells are read by cell convolutions."""
        if self.cell_conv == "auto":
            return has_cells and self.other_reading() is None
        return bool(self.cell_conv)

    def __post_init__(self) -> None:
        if self.cell_conv not in (True, False, "auto"):
            raise ConfigError(f"encoder.cell_conv must be auto, true or false, got {self.cell_conv!r}")
        if self.mode not in MODES:
            raise ConfigError(f"encoder.mode must be one of {MODES}, got {self.mode!r}")
        if self.stack_mode not in STACK_MODES:
            raise ConfigError(f"encoder.stack_mode must be one of {STACK_MODES}, got {self.stack_mode!r}")
        if self.stack < 1:
            raise ConfigError(f"encoder.stack must be >= 1, got {self.stack}")
        if self.projection_scale not in PROJECTION_SCALES:
            raise ConfigError(f"encoder.projection_scale must be one of {PROJECTION_SCALES}, "
                              f"got {self.projection_scale!r}")
        if self.projection_blur < 0:
            raise ConfigError(f"encoder.projection_blur is a Gaussian's sigma in places, >= 0; got {self.projection_blur}")
        if self.projection_keypoints < 0:
            raise ConfigError(f"encoder.projection_keypoints is a count of places per axis, >= 0; "
                              f"got {self.projection_keypoints}")
        if not self.standardize_floor > 0:
            raise ConfigError(f"encoder.standardize_floor is the least spread a number is divided by, > 0; got "
                              f"{self.standardize_floor} (the default is {STANDARDIZE_FLOOR})")
        if self.projection_shift < 0:
            raise ConfigError(f"encoder.projection_shift is a number of places, >= 0; got {self.projection_shift}")
        if any(width < 1 for width in self.shared_layers):
            raise ConfigError(f"encoder.shared_layers must be positive widths, got {self.shared_layers}")
        for name, value, off in (("projection_blur", self.projection_blur, "0"),
                                 ("projection_keypoints", self.projection_keypoints, "0"),
                                 ("projection_shift", self.projection_shift, "0"),
                                 ("shared_layers", self.shared_layers, "[]"),
                                 ("standardize_floor", self.standardize_floor != STANDARDIZE_FLOOR,
                                  str(STANDARDIZE_FLOOR))):
            if value and (self.finetune or not self.standardize):
                raise ConfigError(f"encoder.{name} works on frozen latents in their standardisation: set "
                                  f"encoder.finetune=false and encoder.standardize=true, or encoder.{name}={off}")
        if any(width < 1 for width in self.cell_conv_widths) or not self.cell_conv_widths or self.cell_conv_features < 1:
            raise ConfigError(f"encoder.cell_conv_widths must be one or more positive filter counts and "
                              f"encoder.cell_conv_features a positive width, got {self.cell_conv_widths} and "
                              f"{self.cell_conv_features}")
        if not self.cell_conv_spread > 0:
            raise ConfigError(f"encoder.cell_conv_spread is the cells' spread as the convolutions read them, > 0; "
                              f"got {self.cell_conv_spread} (the default is {CELL_CONV_SPREAD})")
        if self.cell_conv is False and (self.cell_conv_widths != list(CELL_CONV_WIDTHS)
                                        or self.cell_conv_features != CELL_CONV_FEATURES or self.cell_conv_motion
                                        or self.cell_conv_spread != CELL_CONV_SPREAD or self.cell_conv_asinh):
            raise ConfigError("encoder.cell_conv_widths, encoder.cell_conv_features, encoder.cell_conv_motion, "
                              "encoder.cell_conv_spread and encoder.cell_conv_asinh shape the cell convolutions: set "
                              "encoder.cell_conv=auto or true, or leave them at their defaults")
        for name, asked, off in (("cell_conv_motion", self.cell_conv_motion, "false"),
                                 ("cell_conv_spread", self.cell_conv_spread != CELL_CONV_SPREAD, str(CELL_CONV_SPREAD)),
                                 ("cell_conv_asinh", self.cell_conv_asinh, "false")):
            if asked and self.cell_conv == "auto" and (other := self.other_reading()) is not None:
                raise ConfigError(f"encoder.{name} is an option of the cell convolutions, but encoder.{other} asks for "
                                  f"another reading: leave encoder.{other.split('=')[0]} at its default, or set "
                                  f"encoder.{name}={off}")
        if self.cell_conv_motion and self.stack < 2:
            raise ConfigError(f"encoder.cell_conv_motion reads each stacked grid's change from the one before: set "
                              f"encoder.stack to 2 or more (got {self.stack}), or encoder.cell_conv_motion=false")
        for reader, off in (("cell_conv", "auto or false"), ("projection_conv", "false")):
            if getattr(self, reader) is True and (other := self.other_reading(reader)) is not None:
                raise ConfigError(f"encoder.{reader}=true reads frozen, stacked mean latents and standardises them "
                                  f"itself, but encoder.{other} asks for another reading: choose one (set "
                                  f"encoder.{reader}={off}, or leave encoder.{other.split('=')[0]} at its default)")
        if self.finetune and self.mode != "mean":
            raise ConfigError("encoder.finetune=true trains on the deterministic features: use encoder.mode=mean")


@dataclass
class EvalConfig:
    every: int = 25_000
    """Agent steps between evaluations during training (0: only the final one)."""
    episodes: int = 5
    """Episodes per periodic evaluation."""
    final_episodes: int = 10
    """Episodes of the final evaluation written to ``eval.json``."""
    n_envs: int = 5
    """Parallel eval envs (episodes are split between them)."""
    seed_offset: int = 10_000
    """Eval envs are seeded with ``seed + seed_offset``: held-out starts, the same for every run."""
    deterministic: bool | None = None
    """``true``: the greedy action; ``false``: an action sampled from the policy, as in training; ``None``: sampled
    on Atari, as the RL Zoo evaluates Atari agents (without sticky actions a greedy policy plays the same few
    games from different starts), greedy elsewhere."""

    def is_deterministic(self, env: EnvConfig) -> bool:
        """Whether evaluations in ``env`` take the greedy action (``deterministic``, resolved)."""
        return not env.is_atari if self.deterministic is None else self.deterministic


@dataclass
class VideoConfig:
    steps: int = 600
    """Agent steps in ``play.mp4`` (0: no video)."""
    fps: int = 30
    scale: int = 2
    """Upscaling of the 84x84 frames in the video."""


@dataclass(kw_only=True)
class TrainAgentConfig:
    agent: AgentConfig
    """The algorithm and its settings (``agent=<name>``: ``configs/agent/<name>.yaml``)."""
    env: EnvConfig = field(default_factory=EnvConfig)
    encoder: EncoderOptions = field(default_factory=EncoderOptions)
    eval: EvalConfig = field(default_factory=EvalConfig)
    video: VideoConfig = field(default_factory=VideoConfig)
    paths: PathsConfig = field(default_factory=PathsConfig)
    latent: bool = True
    """``true``: the agent sees encoder latents; ``false``: the pixel baseline (NatureCNN on 4 stacked frames)."""
    total_steps: int = 100_000
    """Agent steps (env steps summed over envs; one agent step = 4 Atari frames)."""
    schedule_steps: int | None = None
    """Agent steps the schedules that decay with progress (``lin_2.5e-4``) are planned for; ``None``: ``total_steps``.
    Larger, a run trains the first ``total_steps`` of that longer plan: the RL Zoo's Atari PPO plans 10M steps, so
    ``schedule_steps=10000000 total_steps=1000000`` is its first million. A run trained further with more
    ``total_steps`` and the same ``schedule_steps`` goes on as one run of the longer plan would."""
    seed: int = 0
    """Seeds python, numpy, torch, the envs and their action spaces."""
    device: str = "auto"
    """Policy and encoder device: auto (GPU if there is one) | cpu | cuda | cuda:N."""
    threads: int = 0
    """Torch CPU threads (0: 2 for pixel CNNs and fine-tuned encoders, 1 for frozen latents; see Observations.threads)."""
    checkpoint_every: int = 25_000
    """Agent steps between resumable checkpoints (``checkpoints/last.zip``)."""
    resume: bool = True
    """Continue from ``checkpoints/last.zip`` when the run dir has one, and train a finished run further from its
    ``agent.zip`` when ``total_steps`` is above what it reached (``agents.rl.train.RunStart``)."""
    overwrite: bool = False
    """Allow replacing a finished run in ``run_dir``."""
    progress_bar: bool = True
    """SB3's progress bar on a terminal; without one (a batch job's log file), or with ``false``, periodic
    progress lines (steps, speed, recent return)."""
    run_dir: str | None = None
    """Output folder; ``None``: ``<paths.runs>/agent/<env.name>/<agent.name>-latent<latent>/seed<seed>``."""

    def __post_init__(self) -> None:
        if self.total_steps < 1:
            raise ConfigError(f"total_steps must be >= 1, got {self.total_steps}")
        if self.schedule_steps is not None and self.schedule_steps < self.total_steps:
            raise ConfigError(f"schedule_steps={self.schedule_steps} is below total_steps={self.total_steps}: the "
                              f"schedules would reach 0 at step {self.schedule_steps} and the rest of the run would not "
                              f"learn. Pass schedule_steps >= total_steps, or leave it out to plan them for total_steps")

    @property
    def schedule_horizon(self) -> float:
        """The schedules' length in runs of ``total_steps`` (see :func:`agents.rl.builders.schedule`)."""
        return 1.0 if self.schedule_steps is None else self.schedule_steps / self.total_steps

    @property
    def output_dir(self) -> Path:
        if self.run_dir:
            return Path(self.run_dir)
        return agent_run_dir(self.paths.runs, self.env.name, self.agent.name, self.latent, self.seed)

    def pretrained_encoder_path(self) -> Path:
        """Where ``scripts/pretrain_vae.py env=<env.name> model=<encoder.model> seed=<encoder.seed>`` puts it."""
        if self.encoder.path:
            return Path(self.encoder.path)
        if isinstance(self.encoder.seed, list):
            return self.with_encoder_chosen().pretrained_encoder_path()
        return pretrained_encoder_path(self.paths.runs, self.env.name, self.encoder.model, self.encoder.seed)

    def with_encoder_chosen(self) -> TrainAgentConfig:
        """This config with ``encoder.seed``'s list of pretraining runs resolved to the chosen one (its path and its
        seed): a run chooses once, uses that encoder throughout and says in its ``config.json`` which it took."""
        seeds = self.encoder.seed
        if self.encoder.path or not isinstance(seeds, list):
            return self
        if not all(isinstance(seed, int) for seed in seeds):
            raise ConfigError(f"encoder.seed takes a seed or a list of seeds (integers), got {seeds}")
        runs = {pretrain_run_dir(self.paths.runs, self.env.name, self.encoder.model, seed): seed for seed in seeds}
        chosen = most_informative_run(list(runs))
        encoder = dataclasses.replace(self.encoder, path=str(chosen / CHECKPOINT_FILE), seed=runs[chosen])
        return dataclasses.replace(self, encoder=encoder)
