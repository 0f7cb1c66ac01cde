"""Evaluate a trained agent again: more games, or the other policy (greedy or sampled).

    python scripts/evaluate_agent.py run=runs/agent/Breakout/ppo-latentTrue/seed0 episodes=30
    python scripts/evaluate_agent.py run=runs/agent/Breakout/ppo-latentTrue/seed0 deterministic=true   # greedy
"""

import hydra
from omegaconf import DictConfig

from agents.rl.evaluate import EvaluateAgentConfig, evaluate_agent
from vaerl.cli import run_config


@hydra.main(version_base="1.3", config_path="../configs", config_name="evaluate_agent")
def main(cfg: DictConfig) -> None:
    run_config(cfg, EvaluateAgentConfig, evaluate_agent)


if __name__ == "__main__":
    main()
