"""Typed configuration of a pretraining run. YAML defaults live in ``configs/``; these are the schema."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from vaerl.envs.make import EnvConfig
from vaerl.errors import ConfigError
from vaerl.paths import DATA_ROOT, RUNS_ROOT


@dataclass
class DataConfig:
    frames: int = 30_000
    """Frames to collect with a random policy (reused when a matching dataset exists)."""
    val_fraction: float = 0.1
    """Fraction of episodes held out for validation."""
    shard_size: int = 50_000
    root: str = DATA_ROOT
    """Folder that holds datasets, one sub-folder per (env, preprocessing, size, seed)."""
    extras: list[str] = field(default_factory=lambda: ["ram", "action", "reward"])
    """Per-frame arrays stored beside the frames (``ram`` needs an ALE env or ``get_ram()``)."""
    num_envs: int = 1
    """Envs played at once while collecting (Atari: ale-py's thread pool, others: processes; no ``ram``)."""
    policy: str | None = None
    """A trained agent's run directory (``scripts/train_agent.py``): frames of its play instead of random
    play, for states random play never reaches (:mod:`agents.rl.frames`; no ``ram``)."""


WEIGHTINGS = ("background", "motion", "none")


@dataclass
class WeightingConfig:
    kind: str = "background"
    """``background``: up-weight pixels that differ from the median frame; ``motion``: those and, by as much again,
    the pixels that changed since the previous frame of the episode; ``none``: plain likelihood. With any of them,
    the other fields define the foreground pixels of the reported ``foreground_mse``."""
    weight: float = 20.0
    threshold: float = 0.05
    """Difference from the background (in [0, 1] intensity) above which a pixel counts as foreground."""
    background_frames: int = 2000

    @property
    def reads_previous_frame(self) -> bool:
        """Whether the weights compare each frame with the one before it in its episode (``motion``)."""
        return self.kind == "motion"

    def __post_init__(self) -> None:
        if self.kind not in WEIGHTINGS:
            raise ConfigError(f"weighting.kind must be one of {', '.join(map(repr, WEIGHTINGS))}, got {self.kind!r}")


@dataclass
class TrainConfig:
    steps: int = 3000
    """Optimisation steps; 0 writes the initial encoder (random weights, the data's background): the baseline a
    trained encoder is measured against, in the same pipeline."""
    batch_size: int = 64
    lr: float = 1e-3
    grad_clip: float = 10.0
    log_every: int = 25
    """Steps between TensorBoard scalars (and updates of the loss and speed that progress shows)."""
    val_every: int = 500
    val_frames: int = 2048
    """Held-out frames used per validation pass."""
    checkpoint_every: int = 250
    """Steps between resumable checkpoints."""
    num_threads: int = 0
    """Torch CPU threads (0: all cores up to 8)."""
    channels_last: bool = True
    """NHWC memory layout: 1.3-2x faster convolutions on CPU."""

    def __post_init__(self) -> None:
        if self.steps < 0:
            raise ConfigError(f"train.steps must be >= 0 (0 writes the untrained encoder), got {self.steps}")


@dataclass
class PretrainConfig:
    env: EnvConfig = field(default_factory=EnvConfig)
    model: dict[str, Any] = field(default_factory=lambda: {"kind": "vae"})
    """``kind`` (vae | vqvae) plus the model's keyword arguments (see VAEConfig / VQVAEConfig)."""
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    weighting: WeightingConfig = field(default_factory=WeightingConfig)
    seed: int = 0
    device: str = "auto"
    run_dir: str = f"{RUNS_ROOT}/pretrain"
    progress: bool = True
    """Show progress bars (logging continues either way)."""

    @property
    def model_kind(self) -> str:
        return str(self.model.get("kind", ""))

    @property
    def model_kwargs(self) -> dict[str, Any]:
        return {k: v for k, v in self.model.items() if k != "kind"}
