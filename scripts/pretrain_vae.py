"""Pretrain a VAE / VQ-VAE encoder on env frames.

    python scripts/pretrain_vae.py env=Breakout [model=vae|vqvae] [device=auto] [experiment=full]
    python scripts/pretrain_vae.py -m seed=0,1,2 model=vae,vqvae
    python scripts/pretrain_vae.py env=Breakout data.policy=<agent run directory> hydra.run.dir=<new run>
"""

import hydra
from omegaconf import DictConfig

from vaerl.cli import run_config
from vaerl.training import PretrainConfig, pretrain


def pretrain_on_play(cfg: PretrainConfig) -> dict:
    """Pretrain on random play, or on a trained agent's play with ``data.policy``."""
    if not cfg.data.policy:
        return pretrain(cfg)
    from agents.rl.frames import agent_frames  # loads Stable-Baselines3, which random play does not need

    return pretrain(cfg, agent_frames(cfg))


@hydra.main(version_base="1.3", config_path="../configs", config_name="pretrain")
def main(cfg: DictConfig) -> float:
    metrics = run_config(cfg, PretrainConfig, pretrain_on_play)
    return float(metrics["val"]["loss"])  # the objective for Hydra sweepers


if __name__ == "__main__":
    main()
