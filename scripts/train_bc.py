"""Train a behaviour-cloning policy on demonstrations, evaluate it and draw its rollouts.

    python scripts/train_bc.py demos=data/demos/obstacle_200ep_seed0.npz policy=cvae
    python scripts/train_bc.py demos=<file.npz> policy=mse baseline=null
"""

import hydra
from omegaconf import DictConfig, OmegaConf

from agents.bc.run import TrainBCConfig, run_train_bc
from vaerl.cli import parse_config, run_main


@hydra.main(version_base="1.3", config_path="../configs", config_name="train_bc")
def main(cfg: DictConfig) -> None:
    raw = OmegaConf.to_container(cfg, resolve=True)
    raw.pop("paths", None)
    outputs = run_main(lambda: run_train_bc(parse_config(TrainBCConfig, raw)))
    print(outputs.eval_json)


if __name__ == "__main__":
    main()
