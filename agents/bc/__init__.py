"""Behaviour cloning from demonstrations: CVAE-BC for multimodal experts, regression and MDN baselines.

Every policy has Stable-Baselines3's ``predict(obs, state, episode_start, deterministic)``, so it
runs in the same evaluation code as the RL agents.
"""

from agents.bc.checkpoint import load_policy, save_policy
from agents.bc.evaluate import EvalResult, Rollout, evaluate_bc
from agents.bc.plot import plot_rollouts
from agents.bc.policy import BCPolicy, BCPolicyConfig, PolicyEnvSpec, build_policy
from agents.bc.run import BenchConfig, TrainBCConfig, bench_table, run_bench, run_train_bc
from agents.bc.train import TrainConfig, TrainResult, train_bc

__all__ = [
    "BCPolicy", "BCPolicyConfig", "BenchConfig", "EvalResult", "PolicyEnvSpec", "Rollout", "TrainBCConfig",
    "TrainConfig", "TrainResult", "bench_table", "build_policy", "evaluate_bc", "load_policy", "plot_rollouts",
    "run_bench", "run_train_bc", "save_policy", "train_bc",
]
