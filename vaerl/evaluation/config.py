"""Typed configuration of the evaluation entry points. YAML defaults live in ``configs/``; these are the schema."""

from __future__ import annotations

from dataclasses import dataclass, field

from vaerl.envs.make import EnvConfig
from vaerl.evaluation.prior import PriorSettings
from vaerl.evaluation.probes import BASELINES, ProbeSettings
from vaerl.evaluation.report import ReportSettings
from vaerl.paths import DATA_ROOT, RUNS_ROOT


@dataclass
class ProbeSetup:
    """What every evaluation entry point shares (``configs/base/evaluation.yaml``): where runs and frames live,
    and how to probe."""

    runs_root: str = RUNS_ROOT
    """Root of run folders (``${paths.runs}``); holds the default encoders ``pretrain/<env>/<kind>/seed<seed>``."""
    data_root: str = DATA_ROOT
    """Root of frame datasets (``${paths.data}``); probe frames are collected there once and reused."""
    seed: int = 0
    """Seed of the episode split, probe initialisation and random-init baseline."""
    device: str = "auto"
    annotations: str | None = None
    """A JSON file of RAM annotations (same shape as vaerl/evaluation/annotations.json); null: the shipped one."""
    baselines: list[str] = field(default_factory=lambda: list(BASELINES))
    """Baselines probed beside the encoder: ``random_init`` and/or ``majority``."""
    probe: ProbeSettings = field(default_factory=ProbeSettings)
    num_threads: int = 0
    """Torch CPU threads (0: all cores up to 8)."""
    progress: bool = True


@dataclass
class EncoderChoice(ProbeSetup):
    encoder: str | None = None
    """Checkpoint file or run folder; null: the default pretraining run of ``env`` / ``kind`` / ``seed``."""
    kind: str = "vae"
    """Model family of the default encoder (``vae`` | ``vqvae``); ignored when ``encoder`` is given."""
    env: EnvConfig | None = None
    """Env group option; only picks the default encoder. The env is rebuilt from the checkpoint itself."""


@dataclass
class ProbeRunConfig(EncoderChoice):
    out: str | None = None
    """Where the probe JSON goes; null: ``probe.json`` beside the encoder."""


@dataclass
class EvaluateRunConfig(EncoderChoice):
    prior: PriorSettings = field(default_factory=PriorSettings)
    report: ReportSettings = field(default_factory=ReportSettings)
    out_dir: str | None = None
    """Report folder; null: ``evaluation/`` beside the encoder."""


@dataclass
class BenchProbeConfig(ProbeSetup):
    envs: list[str] = field(default_factory=lambda: ["Breakout", "Pong"])
    """Env names whose default pretraining runs are probed."""
    kinds: list[str] = field(default_factory=lambda: ["vae", "vqvae"])
    reuse: bool = True
    """Reuse a run's ``probe.json`` when it was made from the same checkpoint with the same settings."""
    out: str | None = None
    """Also write the markdown comparison here; null: ``<runs_root>/probe_benchmark.md``."""


__all__ = ["BenchProbeConfig", "EvaluateRunConfig", "ProbeRunConfig"]
