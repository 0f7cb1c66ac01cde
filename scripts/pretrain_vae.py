"""Pretrain a VAE / VQ-VAE encoder on env frames.

    python scripts/pretrain_vae.py env=Breakout [model=vae|vqvae] [device=auto] [experiment=full]
    python scripts/pretrain_vae.py -m seed=0,1,2 model=vae,vqvae
"""

import hydra
from omegaconf import DictConfig, OmegaConf

from vaerl.cli import parse_config, run_main
from vaerl.training import PretrainConfig, pretrain


@hydra.main(version_base="1.3", config_path="../configs", config_name="pretrain")
def main(cfg: DictConfig) -> float:
    raw = OmegaConf.to_container(cfg, resolve=True)
    metrics = run_main(lambda: pretrain(parse_config(PretrainConfig, raw)))
    return float(metrics["val"]["loss"])  # the objective for Hydra sweepers


if __name__ == "__main__":
    main()
