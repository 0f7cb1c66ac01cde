"""Benchmark CVAE-BC against regression BC and an MDN on vaerl's multimodal obstacle tasks.

    python scripts/bench_bc.py                      # two ways past one obstacle, state vectors, 3 seeds
    python scripts/bench_bc.py --task three_ways    # three ways past two obstacles
    python scripts/bench_bc.py --rows state:cvae latent:cvae latent:mse latent:mdn pixels:cvae \\
        --encoder runs/pretrain/obstacle_pixels/vae/seed0/encoder.safetensors

Rows are <observation>:<policy>: observations ``state`` (state vectors), ``latent`` (RGB frames through
a pretrained vaerl encoder, evaluated through vaerl.wrap; pretrained here when --encoder is not given)
or ``pixels`` (the same frames, a conv trunk trained end to end). For each seed: record demos with the
scripted expert, train every row, evaluate on unseen episodes; prints success rate, the share of
successes that went each way and mode coverage (mean ± std over seeds), and writes JSON + a picture.
"""

import argparse
import logging
from dataclasses import replace
from pathlib import Path

import torch

from agents.bc.bench import (
    OBSERVATIONS,
    TASKS,
    BenchConfig,
    EncoderPretraining,
    bench_table,
    run_bench,
    write_bench,
)
from agents.bc.train import TrainConfig
from vaerl.cli import run_main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", default="two_ways", choices=sorted(TASKS))
    parser.add_argument("--rows", nargs="+", default=list(BenchConfig.rows),
                        help=f"<observation>:<cvae|mse|mdn>, observation in {sorted(OBSERVATIONS)} (mdn: Box actions)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--demo-episodes", type=int, default=200)
    parser.add_argument("--eval-episodes", type=int, default=100)
    parser.add_argument("--steps", type=int, default=TrainConfig.steps, help="training steps per policy")
    parser.add_argument("--pixel-steps", type=int, default=BenchConfig().pixel_train.steps,
                        help="training steps of pixels rows")
    parser.add_argument("--image-size", type=int, default=BenchConfig.image_size, help="frames of latent/pixels rows")
    parser.add_argument("--encoder", help="encoder for latent rows (default: pretrain one into --work-dir)")
    parser.add_argument("--pretrain-steps", type=int, default=EncoderPretraining.steps)
    parser.add_argument("--pretrain-frames", type=int, default=EncoderPretraining.frames)
    parser.add_argument("--work-dir", default=BenchConfig.work_dir, help="pretrained encoders and their frames")
    parser.add_argument("--discrete", action="store_true", help="Discrete(8) compass actions instead of Box(2)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (small MLPs: 1 is fastest)")
    parser.add_argument("--out", type=Path, default=Path("bench_results/bc.json"))
    parser.add_argument("--picture", type=Path, default=Path("bench_results/bc_rollouts.png"))
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    for noisy in ("agents.bc.train", "vaerl.training.pretrain"):  # one line per row and seed is enough
        logging.getLogger(noisy).setLevel(logging.WARNING)
    torch.set_num_threads(args.threads)

    def body() -> None:
        config = BenchConfig(
            task=args.task,
            rows=tuple(args.rows),
            train=replace(TrainConfig(), steps=args.steps),
            pixel_train=replace(BenchConfig().pixel_train, steps=args.pixel_steps),
            continuous=not args.discrete,
            image_size=args.image_size,
            encoder=args.encoder,
            pretraining=EncoderPretraining(steps=args.pretrain_steps, frames=args.pretrain_frames),
            work_dir=args.work_dir,
            demo_episodes=args.demo_episodes,
            eval_episodes=args.eval_episodes,
            seeds=tuple(args.seeds),
            threads=args.threads,
        )
        result = run_bench(config)
        print(bench_table(result))
        print(f"{args.task}: {len(args.seeds)} seeds, {args.demo_episodes} demos, {args.eval_episodes} eval episodes, "
              f"{args.steps} steps ({args.pixel_steps} for pixels rows); {result.seconds:.0f}s")
        write_bench(result, config, args.out, args.picture)
        print(f"wrote {args.out} and {args.picture}")

    run_main(body)


if __name__ == "__main__":
    main()
