"""The run-directory layout: where each entry point writes, and where the others look for it.

::

    <runs>/pretrain/<env>/<model>/seed<seed>/encoder.safetensors    scripts/pretrain_vae.py
    <runs>/agent/<env>/<agent>-latent<latent>/seed<seed>/           scripts/train_agent.py
    <runs>/bc/<policy>/<time>/                                      scripts/train_bc.py
    <runs>/hydra/<script>/<time>/                                   the logs of the other scripts
    <data>/...                                                      frame datasets and demo files

``<runs>`` and ``<data>`` are ``runs`` and ``data`` (relative to the directory a command starts in)
unless the environment variables ``VAERL_RUNS`` / ``VAERL_DATA`` say otherwise. Hydra computes a
script's run directory from ``hydra.run.dir`` in ``configs/*.yaml`` before any vaerl code runs, so
those lines spell the same layout; ``tests/test_configs.py`` checks that they agree with this module.
"""

from __future__ import annotations

from pathlib import Path

from vaerl.checkpoint import CHECKPOINT_FILE

RUNS_ROOT = "runs"
"""Root of run directories when ``VAERL_RUNS`` is not set (``${paths.runs}`` in the configs)."""
DATA_ROOT = "data"
"""Root of datasets when ``VAERL_DATA`` is not set (``${paths.data}`` in the configs)."""
RUNS_VARIABLE = "VAERL_RUNS"
DATA_VARIABLE = "VAERL_DATA"


def pretrain_run_dir(runs: str | Path, env_name: str, model: str, seed: int) -> Path:
    """The folder of ``scripts/pretrain_vae.py env=<env_name> model=<model> seed=<seed>``."""
    return Path(runs) / "pretrain" / env_name / model / f"seed{seed}"


def pretrained_encoder_path(runs: str | Path, env_name: str, model: str, seed: int) -> Path:
    """The encoder checkpoint that pretraining run writes."""
    return pretrain_run_dir(runs, env_name, model, seed) / CHECKPOINT_FILE


def agent_run_dir(runs: str | Path, env_name: str, agent_name: str, latent: bool, seed: int) -> Path:
    """The folder of ``scripts/train_agent.py env=<env_name> agent=<agent_name> latent=<latent> seed=<seed>``."""
    return Path(runs) / "agent" / env_name / f"{agent_name}-latent{latent}" / f"seed{seed}"


__all__ = ["DATA_ROOT", "DATA_VARIABLE", "RUNS_ROOT", "RUNS_VARIABLE", "agent_run_dir", "pretrain_run_dir",
           "pretrained_encoder_path"]
