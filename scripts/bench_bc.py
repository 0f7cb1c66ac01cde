"""Benchmark CVAE-BC against regression BC (and an MDN) on the multimodal obstacle env.

    python scripts/bench_bc.py                      # 3 seeds x 200 demos, vector observations
    python scripts/bench_bc.py --seeds 0 1 2 3 4 --demo-episodes 100 --out bench_results/bc.json

For each seed: record demos with the scripted expert, train every policy, evaluate on unseen
episodes; prints success rate and mode coverage (mean ± std over seeds) and writes JSON + a picture.
"""

import argparse
import logging
from dataclasses import replace
from pathlib import Path

import torch

from agents.bc.policy import BCPolicyConfig
from agents.bc.run import BenchConfig, bench_table, run_bench, write_bench
from agents.bc.train import TrainConfig
from vaerl.cli import run_main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--demo-episodes", type=int, default=200)
    parser.add_argument("--eval-episodes", type=int, default=100)
    parser.add_argument("--steps", type=int, default=TrainConfig.steps, help="training steps per policy")
    parser.add_argument("--policies", nargs="+", default=["cvae", "mse", "mdn"], choices=["cvae", "mse", "mdn"],
                        help="mdn is for Box actions only")
    parser.add_argument("--obs-type", default="vector", choices=["vector", "pixels"])
    parser.add_argument("--discrete", action="store_true", help="Discrete(8) compass actions instead of Box(2)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (small MLPs: 1 is fastest)")
    parser.add_argument("--out", type=Path, default=Path("bench_results/bc.json"))
    parser.add_argument("--picture", type=Path, default=Path("bench_results/bc_rollouts.png"))
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("agents.bc.train").setLevel(logging.WARNING)  # one line per policy and seed is enough
    torch.set_num_threads(args.threads)

    config = BenchConfig(
        policies={kind: BCPolicyConfig(kind=kind) for kind in args.policies},
        train=replace(TrainConfig(), steps=args.steps),
        env_kwargs={"obs_type": args.obs_type, "continuous": not args.discrete},
        demo_episodes=args.demo_episodes,
        eval_episodes=args.eval_episodes,
        seeds=tuple(args.seeds),
    )

    def body() -> None:
        result = run_bench(config)
        print(bench_table(result))
        print(f"{len(args.seeds)} seeds, {args.demo_episodes} demos, {args.eval_episodes} eval episodes, "
              f"{args.steps} steps; {result.seconds:.0f}s")
        write_bench(result, config, args.out, args.picture)
        print(f"wrote {args.out} and {args.picture}")

    run_main(body)


if __name__ == "__main__":
    main()
