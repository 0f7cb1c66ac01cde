"""Linear probes (AtariARI protocol) of an encoder's latents for the game's RAM variables.

    python scripts/probe.py encoder=runs/pretrain/Breakout/vae/seed0
    python scripts/probe.py env=Pong kind=vqvae probe.frames=50000
"""

import hydra
from omegaconf import DictConfig

from vaerl.cli import run_config
from vaerl.evaluation.config import ProbeRunConfig
from vaerl.evaluation.runs import run_probe


@hydra.main(version_base="1.3", config_path="../configs", config_name="probe")
def main(cfg: DictConfig) -> float:
    report = run_config(cfg, ProbeRunConfig, run_probe)
    return report.mean_f1()  # the objective for Hydra sweepers


if __name__ == "__main__":
    main()
