"""Linear probes (AtariARI protocol) of an encoder's latents for the game's RAM variables.

    python scripts/probe.py encoder=runs/pretrain/Breakout/vae/seed0
    python scripts/probe.py env=Pong kind=vqvae probe.frames=50000
"""

import hydra
from omegaconf import DictConfig, OmegaConf

from vaerl.cli import parse_config, run_main
from vaerl.evaluation.config import ProbeRunConfig
from vaerl.evaluation.runs import run_probe


@hydra.main(version_base="1.3", config_path="../configs", config_name="probe")
def main(cfg: DictConfig) -> float:
    raw = OmegaConf.to_container(cfg, resolve=True)
    report = run_main(lambda: run_probe(parse_config(ProbeRunConfig, raw)))
    return report.mean_f1()  # the objective for Hydra sweepers


if __name__ == "__main__":
    main()
