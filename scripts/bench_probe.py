"""The probe benchmark: default VAE and VQ-VAE encoders of several games beside the AtariARI numbers.

Prints mean F1, per AtariARI category and over the ball and player variables, and the reward probe,
for each encoder and its baselines.

    python scripts/bench_probe.py                      # envs=[Breakout,Pong] kinds=[vae,vqvae]
    python scripts/bench_probe.py envs=[Breakout] probe=quick
"""

import hydra
from omegaconf import DictConfig

from vaerl.cli import run_config
from vaerl.evaluation.config import BenchProbeConfig
from vaerl.evaluation.runs import run_probe_benchmark


@hydra.main(version_base="1.3", config_path="../configs", config_name="bench_probe")
def main(cfg: DictConfig) -> None:
    run_config(cfg, BenchProbeConfig, run_probe_benchmark)


if __name__ == "__main__":
    main()
