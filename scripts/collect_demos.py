"""Record expert demonstrations into one .npz demo file (or, with ``format=minari``, a Minari dataset).

    python scripts/collect_demos.py env=obstacle expert=scripted episodes=200
    python scripts/collect_demos.py env=obstacle expert=runs/agent/ppo.zip expert_algo=PPO episodes=50
"""

import hydra
from omegaconf import DictConfig, OmegaConf

from agents.bc.collect import CollectDemosConfig, collect_demos
from vaerl.cli import parse_config, run_main
from vaerl.runtime import seed_everything


@hydra.main(version_base="1.3", config_path="../configs", config_name="collect_demos")
def main(cfg: DictConfig) -> None:
    raw = OmegaConf.to_container(cfg, resolve=True)

    def body() -> None:
        config = parse_config(CollectDemosConfig, raw)
        seed_everything(config.seed)
        print(collect_demos(config))

    run_main(body)


if __name__ == "__main__":
    main()
