"""The probe benchmark: default VAE and VQ-VAE encoders of several games beside the AtariARI numbers.

    python scripts/bench_probe.py                      # envs=[Breakout,Pong] kinds=[vae,vqvae]
    python scripts/bench_probe.py envs=[Breakout] probe=quick
"""

import hydra
from omegaconf import DictConfig, OmegaConf

from vaerl.cli import parse_config, run_main
from vaerl.evaluation.config import BenchProbeConfig
from vaerl.evaluation.runs import run_probe_benchmark


@hydra.main(version_base="1.3", config_path="../configs", config_name="bench_probe")
def main(cfg: DictConfig) -> None:
    raw = OmegaConf.to_container(cfg, resolve=True)
    run_main(lambda: run_probe_benchmark(parse_config(BenchProbeConfig, raw)))


if __name__ == "__main__":
    main()
