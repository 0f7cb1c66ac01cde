"""Train a Stable-Baselines3 agent on encoder latents (latent=true) or on pixels (latent=false).

    python scripts/train_agent.py latent=true env=Breakout agent=ppo [encoder=<path>] [device=auto]
    python scripts/train_agent.py latent=false env=Breakout agent=ppo
    python scripts/train_agent.py -m latent=true,false seed=0,1
"""

import sys

import hydra
from omegaconf import DictConfig

from agents.rl import TrainAgentConfig, train_agent
from vaerl.cli import path_shorthand, run_config


@hydra.main(version_base="1.3", config_path="../configs", config_name="train_agent")
def main(cfg: DictConfig) -> float:
    metrics = run_config(cfg, TrainAgentConfig, train_agent)
    return float(metrics["mean_return"])  # the objective for Hydra sweepers


if __name__ == "__main__":
    # `encoder=<path>` is shorthand for `encoder.path=<path>` (encoder is a node: encoder.finetune=true, ...)
    sys.argv = path_shorthand(sys.argv, "encoder")
    main()
