"""Behaviour cloning from demonstrations: CVAE-BC for multimodal experts, regression and MDN baselines.

Every policy has Stable-Baselines3's ``predict(obs, state, episode_start, deterministic)``, so it
runs in the same evaluation code as the RL agents.
"""

from agents.bc.bench import BenchConfig, bench_table, run_bench
from agents.bc.checkpoint import load_policy, save_policy
from agents.bc.collect import CollectDemosConfig, collect_demos
from agents.bc.evaluate import EvalResult, Rollout, evaluate_bc
from agents.bc.experts import load_sb3_expert, make_expert, scripted_expert
from agents.bc.plot import plot_rollouts
from agents.bc.policy import BCPolicy, BCPolicyConfig, PolicyEnvSpec, build_policy
from agents.bc.run import TrainBCConfig, run_train_bc
from agents.bc.train import TrainConfig, TrainResult, train_bc

__all__ = [
    "BCPolicy", "BCPolicyConfig", "BenchConfig", "CollectDemosConfig", "EvalResult", "PolicyEnvSpec", "Rollout",
    "TrainBCConfig", "TrainConfig", "TrainResult", "bench_table", "build_policy", "collect_demos", "evaluate_bc",
    "load_policy", "load_sb3_expert", "make_expert", "plot_rollouts", "run_bench", "run_train_bc", "save_policy",
    "scripted_expert", "train_bc",
]
