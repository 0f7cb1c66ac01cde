"""Benchmark pretraining throughput and memory, side by side in one process.

Measures, at 84x84 on the default VAE and VQ-VAE:
  * training frames/s (model step with the background-frame weighting, data from the loader),
  * frames/s of the data pipeline alone (memory-mapped gather + prefetch thread, no model),
  * the fraction of training time spent waiting for data,
  * peak resident memory while training from a large (default 200k-frame) dataset.

    python scripts/bench_pretrain.py [--frames 200000] [--steps 60] [--device auto] [--out bench_results/pretrain.json]

The large dataset is built by tiling real Breakout frames (collected once, cached under --data-dir),
so its size on disk is real while collection stays short.
"""

from __future__ import annotations

import argparse
import json
import resource
import time
from pathlib import Path

import numpy as np
import torch
import yaml

from vaerl.data import BatchLoader, FrameDataset, FrameDatasetWriter, ensure_dataset
from vaerl.envs import EnvConfig, make_env, preprocess_spec
from vaerl.models import build_model
from vaerl.runtime import configure_threads, resolve_device, seed_everything
from vaerl.training.pretrain import optimisation_step, prepare
from vaerl.training.weighting import ForegroundWeighting, median_frame

REPO = Path(__file__).resolve().parents[1]


def reset_peak_rss() -> None:
    """Start a new peak-RSS window (Linux); building the dataset above must not count as training memory."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def peak_rss_mb() -> float:
    """Peak resident memory since the last reset (VmHWM), else since the process started."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def large_dataset(data_dir: Path, frames: int, seed: int) -> FrameDataset:
    """A ``frames``-long dataset made of tiled real Breakout episodes (built once, then reused)."""
    path = data_dir / f"bench-breakout-tiled-{frames}"
    if (path / "meta.json").exists():
        return FrameDataset(path)
    config = EnvConfig()
    spec = preprocess_spec(config, make_env(config))
    source = ensure_dataset(data_dir, lambda: make_env(config, seed=seed), spec, 20_000, key=config.to_dict(),
                            seed=seed, progress=True)
    base = source.frames(slice(None))
    with FrameDatasetWriter(path, spec.frame_shape, shard_size=50_000, info={"tiled_from": str(source.path)}) as w:
        for start in range(0, frames, len(base)):
            count = min(len(base), frames - start)
            w.add(base[:count], source.episodes[:count] + start)  # fresh episode ids for every copy
        w.close()
    return FrameDataset(path)


def model_kwargs(kind: str) -> dict:
    config = yaml.safe_load((REPO / "configs" / "model" / f"{kind}.yaml").read_text())
    return {k: v for k, v in config.items() if k != "kind"}


def bench_loader(dataset: FrameDataset, indices: np.ndarray, batch_size: int, batches: int) -> float:
    loader = BatchLoader(dataset, indices, batch_size, seed=1)
    try:
        next(loader)
        start = time.perf_counter()
        for _ in range(batches):
            next(loader)
        return batches * batch_size / (time.perf_counter() - start)
    finally:
        loader.close()


def bench_training(kind: str, dataset: FrameDataset, indices: np.ndarray, batch_size: int, steps: int,
                   device: torch.device) -> dict[str, float]:
    model = build_model(kind, input_shape=(1, 84, 84), **model_kwargs(kind)).to(device)
    channels_last = device.type == "cpu"
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    background = median_frame(dataset, indices, 500)
    weighting = ForegroundWeighting(background, 20.0, 0.05, 1, device)
    loader = BatchLoader(dataset, indices, batch_size, seed=0, pin_memory=device.type == "cuda")
    try:
        warmup = 5
        for step in range(warmup):
            optimisation_step(model, optimizer, prepare(next(loader), device, channels_last), weighting, step, 10.0)
        loader.wait_seconds = 0.0
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        for step in range(steps):
            out = optimisation_step(model, optimizer, prepare(next(loader), device, channels_last), weighting, step, 10.0)
        out.loss.item()  # wait for the device
        elapsed = time.perf_counter() - start
    finally:
        loader.close()
    return {"frames_per_s": steps * batch_size / elapsed, "data_wait_fraction": loader.wait_seconds / elapsed,
            "ms_per_step": 1000 * elapsed / steps}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=200_000)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--data-dir", type=Path, default=Path("data"))
    parser.add_argument("--out", type=Path, default=Path("bench_results/pretrain.json"))
    args = parser.parse_args()

    seed_everything(0)
    configure_threads(args.threads)
    device = resolve_device(args.device)
    dataset = large_dataset(args.data_dir, args.frames, seed=0)
    train_idx, _ = dataset.split_by_episode(0.1)
    reset_peak_rss()
    rss_before = peak_rss_mb()

    results = {
        "device": str(device), "torch_threads": torch.get_num_threads(), "batch_size": args.batch_size,
        "dataset_frames": len(dataset), "dataset_size_mb": len(dataset) * 84 * 84 / 2**20,
        "loader_frames_per_s": bench_loader(dataset, train_idx, args.batch_size, 200),
    }
    for kind in ("vae", "vqvae"):
        results[kind] = bench_training(kind, dataset, train_idx, args.batch_size, args.steps, device)
    results["peak_rss_mb"] = peak_rss_mb()
    results["rss_before_training_mb"] = rss_before
    if device.type == "cuda":
        results["peak_cuda_mb"] = torch.cuda.max_memory_allocated() / 2**20

    print(f"\nvaerl pretraining benchmark  (device={results['device']}, threads={results['torch_threads']}, "
          f"batch={args.batch_size}, 84x84 gray)")
    print(f"{'measure':<44}{'value':>14}")
    rows = [
        ("data pipeline alone (frames/s)", f"{results['loader_frames_per_s']:,.0f}"),
        ("VAE training (frames/s)", f"{results['vae']['frames_per_s']:,.0f}"),
        ("VAE time waiting for data", f"{100 * results['vae']['data_wait_fraction']:.1f} %"),
        ("VQ-VAE training (frames/s)", f"{results['vqvae']['frames_per_s']:,.0f}"),
        ("VQ-VAE time waiting for data", f"{100 * results['vqvae']['data_wait_fraction']:.1f} %"),
        (f"dataset ({len(dataset):,} frames) size on disk (MB)", f"{results['dataset_size_mb']:,.0f}"),
        ("peak RSS while training (MB)", f"{results['peak_rss_mb']:,.0f}"),
        ("RSS before training (MB)", f"{results['rss_before_training_mb']:,.0f}"),
    ]
    if "peak_cuda_mb" in results:
        rows.append(("peak CUDA memory (MB)", f"{results['peak_cuda_mb']:,.0f}"))
    for name, value in rows:
        print(f"{name:<44}{value:>14}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
