"""Train a behaviour-cloning policy on demonstrations, evaluate it and draw its rollouts.

    python scripts/train_bc.py demos=data/demos/obstacle_200ep_seed0.npz policy=cvae
    python scripts/train_bc.py demos=<file.npz> policy=mse baseline=null
"""

import hydra
from omegaconf import DictConfig

from agents.bc.run import TrainBCConfig, run_train_bc
from vaerl.cli import run_config


@hydra.main(version_base="1.3", config_path="../configs", config_name="train_bc")
def main(cfg: DictConfig) -> None:
    outputs = run_config(cfg, TrainBCConfig, run_train_bc)
    print(outputs.eval_json)


if __name__ == "__main__":
    main()
