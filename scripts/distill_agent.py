"""Distil a trained pixel agent into a policy on frozen latents: do the latents hold what it acts on?

    python scripts/distill_agent.py teacher=runs/agent/Breakout/ppo-latentFalse/seed0
    python scripts/distill_agent.py teacher=<run dir> encoder=<path> encoder.shared_layers=[512] distill.dagger_rounds=0
    python scripts/distill_agent.py teacher=<run dir> student=pixels    # the control: a fresh pixel student
"""

import sys

import hydra
from omegaconf import DictConfig

from agents.rl.distill import DistillConfig, distill_agent
from vaerl.cli import path_shorthand, run_config


@hydra.main(version_base="1.3", config_path="../configs", config_name="distill_agent")
def main(cfg: DictConfig) -> float:
    results = run_config(cfg, DistillConfig, distill_agent)
    return float(results["rounds"][-1]["mean_return"])  # the objective for Hydra sweepers


if __name__ == "__main__":
    # `encoder=<path>` is shorthand for `encoder.path=<path>`, as in train_agent.py
    sys.argv = path_shorthand(sys.argv, "encoder")
    main()
