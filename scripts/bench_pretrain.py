"""Benchmark pretraining throughput and memory, side by side in one process.

Measures, at 84x84 on the default VAE and VQ-VAE:
  * training frames/s (model step with the background-frame weighting, data from the loader),
  * frames/s of the data pipeline alone (memory-mapped gather + prefetch thread, no model),
  * the fraction of training time spent waiting for data,
  * peak resident memory while training from a large (default 200k-frame) dataset,
  * with --rss-sizes: peak resident memory of a training process against dataset size (each size in a
    fresh process; the memory map keeps anonymous memory flat however large the dataset grows),
  * with --collect: frames/s of random-policy collection, one env against ale-py's vector env.

    python scripts/bench_pretrain.py [--frames 200000] [--steps 60] [--device auto] [--out bench_results/pretrain.json]
    python scripts/bench_pretrain.py --rss-sizes 100000,400000,1600000 --steps 200
    python scripts/bench_pretrain.py --collect 20000 --num-envs 1,4,16

The large dataset is built by tiling real Breakout frames (collected once, cached under --data-dir),
so its size on disk is real while collection stays short.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import resource
import shutil
import time
from pathlib import Path

import numpy as np
import torch
import yaml

from vaerl.data import BatchLoader, FrameDataset, FrameDatasetWriter, collect_frames, ensure_dataset
from vaerl.data.vector_collect import collect_vector_frames, frame_vector_env
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


def memory_status_mb() -> dict[str, float]:
    """Resident memory now, split into anonymous (heap, tensors) and file-backed (memory-mapped shards) pages."""
    fields = {}
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("VmHWM", "VmRSS", "RssAnon", "RssFile"):
                fields[key] = int(value.split()[0]) / 1024
    except OSError:
        pass
    return fields


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
            x = prepare(next(loader).frames, device, channels_last)
            optimisation_step(model, optimizer, x, weighting(x), step, 10.0)
        loader.wait_seconds = 0.0
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        for step in range(steps):
            x = prepare(next(loader).frames, device, channels_last)
            out = optimisation_step(model, optimizer, x, weighting(x), step, 10.0)
        out.loss.item()  # wait for the device
        elapsed = time.perf_counter() - start
    finally:
        loader.close()
    return {"frames_per_s": steps * batch_size / elapsed, "data_wait_fraction": loader.wait_seconds / elapsed,
            "ms_per_step": 1000 * elapsed / steps}


def evict_from_page_cache(path: Path) -> None:
    """Drop the dataset's pages from the page cache (Linux), so reads come from the disk as they would for a
    dataset larger than RAM."""
    for file in path.glob("*.npy"):
        fd = os.open(file, os.O_RDONLY)
        try:
            os.fsync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def disk_read_mb() -> float:
    """Bytes this process has read from the disk so far (Linux), in MB."""
    try:
        lines = dict(line.split(": ") for line in Path("/proc/self/io").read_text().splitlines())
        return int(lines["read_bytes"]) / 2**20
    except (OSError, KeyError):
        return float("nan")


def train_and_measure_rss(path: str, steps: int, batch_size: int, queue: mp.Queue) -> None:
    """In a fresh process: train the VAE ``steps`` steps on the dataset at ``path`` (its pages evicted from
    the page cache first), report memory and disk reads."""
    configure_threads(0)
    evict_from_page_cache(Path(path))
    read_before = disk_read_mb()
    dataset = FrameDataset(path)
    train_idx, _ = dataset.split_by_episode(0.1)
    reset_peak_rss()
    result = bench_training("vae", dataset, train_idx, batch_size, steps, torch.device("cpu"))
    queue.put({**result, **memory_status_mb(), "dataset_frames": len(dataset), "disk_read_mb": disk_read_mb() - read_before})


def rss_against_size(data_dir: Path, sizes: list[int], steps: int, batch_size: int) -> list[dict[str, float]]:
    """Peak RSS of a training process for each dataset size (datasets are built, measured, then deleted)."""
    ctx = mp.get_context("spawn")
    rows = []
    for frames in sizes:
        dataset = large_dataset(data_dir, frames, seed=0)
        queue = ctx.Queue()
        worker = ctx.Process(target=train_and_measure_rss, args=(str(dataset.path), steps, batch_size, queue))
        worker.start()
        row = queue.get()
        worker.join()
        row["dataset_size_mb"] = frames * 84 * 84 / 2**20
        rows.append(row)
        print(f"  {frames:>10,} frames  {row['dataset_size_mb']:>8,.0f} MB on disk   peak RSS {row['VmHWM']:>6,.0f} MB"
              f"   (anonymous {row['RssAnon']:,.0f} MB, file-backed {row['RssFile']:,.0f} MB at the end)"
              f"   read from disk {row['disk_read_mb']:,.0f} MB", flush=True)
        shutil.rmtree(dataset.path)
    return rows


def collection_speed(data_dir: Path, frames: int, env_counts: list[int]) -> dict[str, float]:
    """Frames/s of random-policy Breakout collection with one env and with ale-py's vector env."""
    config = EnvConfig()
    spec = preprocess_spec(config, make_env(config))
    speeds = {}
    for num_envs in env_counts:
        path = data_dir / f"bench-collect-{num_envs}"
        shutil.rmtree(path, ignore_errors=True)
        envs = make_env(config, seed=0) if num_envs == 1 else frame_vector_env(config, num_envs)
        start = time.perf_counter()
        if num_envs == 1:
            collect_frames(envs, spec, frames, path, extras=["action", "reward"], progress=False)
        else:
            collect_vector_frames(envs, spec, frames, path, extras=["action", "reward"], progress=False)
        speeds[f"{num_envs}_envs"] = frames / (time.perf_counter() - start)
        envs.close()
        shutil.rmtree(path)
        print(f"  {num_envs:>3} env(s): {speeds[f'{num_envs}_envs']:>8,.0f} frames/s", flush=True)
    return speeds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=200_000)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--data-dir", type=Path, default=Path("data"))
    parser.add_argument("--out", type=Path, default=Path("bench_results/pretrain.json"))
    parser.add_argument("--rss-sizes", default=None, help="comma-separated dataset sizes (frames): peak RSS of each")
    parser.add_argument("--collect", type=int, default=0, help="frames to collect per setting of --num-envs")
    parser.add_argument("--num-envs", default="1,4,16", help="env counts for --collect (1 = one gymnasium env)")
    args = parser.parse_args()

    if args.rss_sizes or args.collect:
        extra: dict = {}
        if args.collect:
            print(f"random-policy collection of {args.collect:,} Breakout frames:")
            extra["collect_frames_per_s"] = collection_speed(args.data_dir, args.collect,
                                                             [int(n) for n in args.num_envs.split(",")])
        if args.rss_sizes:
            print(f"peak RSS of a VAE training process ({args.steps} steps, batch {args.batch_size}) by dataset size:")
            extra["rss_by_dataset_size"] = rss_against_size(args.data_dir, [int(n) for n in args.rss_sizes.split(",")],
                                                            args.steps, args.batch_size)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(extra, indent=2) + "\n")
        print(f"\nwrote {args.out}")
        return

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
