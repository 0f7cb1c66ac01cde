"""Pretrain a VAE / VQ-VAE encoder on env frames.

    python scripts/pretrain_vae.py env=Breakout [model=vae|vqvae] [device=auto] [experiment=full]
    python scripts/pretrain_vae.py -m seed=0,1,2 model=vae,vqvae
"""

import hydra
from omegaconf import DictConfig

from vaerl.cli import run_config
from vaerl.training import PretrainConfig, pretrain


@hydra.main(version_base="1.3", config_path="../configs", config_name="pretrain")
def main(cfg: DictConfig) -> float:
    metrics = run_config(cfg, PretrainConfig, pretrain)
    return float(metrics["val"]["loss"])  # the objective for Hydra sweepers


if __name__ == "__main__":
    main()
