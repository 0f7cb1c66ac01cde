"""Pretraining an encoder on env frames: collect (or reuse) a dataset, train, validate, write outputs.

Outputs in ``run_dir``:

* ``encoder.safetensors`` – weights + model config + preprocessing spec + env + vaerl version
* ``train_state.pt``      – weights, optimiser and RNG state for resuming (tensors only)
* ``recon.png``           – held-out frames (top) above their reconstructions (bottom)
* ``samples.png``         – decoder means of prior samples (VAE)
* ``metrics.json``        – validation metrics, throughput, dataset and run facts
* ``tb/``                 – TensorBoard scalars
"""

from __future__ import annotations

import json
import logging
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.tensorboard import SummaryWriter
from tqdm.auto import tqdm

import vaerl
from vaerl.checkpoint import CHECKPOINT_FILE as CHECKPOINT
from vaerl.checkpoint import save_checkpoint
from vaerl.data import BatchLoader, FrameDataset, ensure_dataset, iterate_in_order
from vaerl.envs import make_env, preprocess_spec
from vaerl.errors import ConfigError, TrainingError
from vaerl.io import atomic_path, write_json
from vaerl.models import VAE, FrameModel, LossOutput, build_model
from vaerl.models.blocks import to_unit
from vaerl.preprocessing import PreprocessSpec
from vaerl.runtime import configure_threads, resolve_device, seed_everything
from vaerl.training.config import PretrainConfig
from vaerl.training.weighting import ForegroundWeighting, median_frame
from vaerl.viz import save_frame_grid

log = logging.getLogger(__name__)

TRAIN_STATE = "train_state.pt"
METRICS = "metrics.json"


def pretrain(cfg: PretrainConfig) -> dict[str, Any]:
    """Run (or resume, or skip if finished) one pretraining run; returns its metrics."""
    run_dir = Path(cfg.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    seed_everything(cfg.seed)
    configure_threads(cfg.train.num_threads)
    device = resolve_device(cfg.device)

    spec = encoder_spec(cfg)
    dataset = ensure_dataset(
        cfg.data.root, lambda: make_env(cfg.env, seed=cfg.seed), spec, cfg.data.frames,
        key=cfg.env.to_dict(), seed=cfg.seed, extras=cfg.data.extras, shard_size=cfg.data.shard_size,
        progress=cfg.progress,
    )
    train_idx, val_idx = dataset.split_by_episode(cfg.data.val_fraction, seed=cfg.seed)
    model = build_model(cfg.model_kind, input_shape=spec.input_shape, **cfg.model_kwargs).to(device)
    if cfg.train.channels_last and device.type == "cpu":
        model = model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=cfg.train.lr)

    identity = run_identity(cfg, spec, model)
    start_step = resume(run_dir, model, optimizer, identity, cfg.train.lr)
    if start_step >= cfg.train.steps and (run_dir / METRICS).exists():
        log.info("run %s already finished %d steps; nothing to do", run_dir, start_step)
        return json.loads((run_dir / METRICS).read_text())

    foreground = foreground_of(cfg, dataset, train_idx, spec, device)
    loss_weighting = foreground if cfg.weighting.kind == "background" else None
    throughput = train_loop(cfg, run_dir, model, optimizer, dataset, train_idx, val_idx, spec, loss_weighting,
                            foreground, identity, start_step, device)
    return finish(cfg, run_dir, model, dataset, val_idx, spec, foreground, throughput)


def encoder_spec(cfg: PretrainConfig) -> PreprocessSpec:
    """The preprocessing spec of the configured env (builds the env once to read its observation space)."""
    env = make_env(cfg.env)
    try:
        return preprocess_spec(cfg.env, env)
    finally:
        env.close()


def run_identity(cfg: PretrainConfig, spec: PreprocessSpec, model: FrameModel) -> dict[str, Any]:
    """What must not change when a run is resumed: model, preprocessing, env and data."""
    return {"model": {"kind": model.kind, **model.config_dict()}, "spec": spec.to_dict(), "env": cfg.env.to_dict(),
            "frames": cfg.data.frames, "seed": cfg.seed}


def resume(run_dir: Path, model: FrameModel, optimizer: torch.optim.Optimizer, identity: dict[str, Any],
           lr: float) -> int:
    """Load ``train_state.pt`` if the run directory has one; returns the step to continue from."""
    path = run_dir / TRAIN_STATE
    if not path.exists():
        return 0
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for a damaged zip/pickle
        raise TrainingError(f"cannot resume from {path}: the file is corrupt ({exc}). Delete it to start over, or "
                            "choose another run directory (hydra.run.dir=...)") from exc
    saved = json.loads(state["identity"])
    if saved != json.loads(json.dumps(identity, default=str)):
        changed = sorted(k for k in identity if json.dumps(saved.get(k), sort_keys=True, default=str)
                         != json.dumps(identity[k], sort_keys=True, default=str))
        raise ConfigError(f"{run_dir} holds a run with a different {', '.join(changed)}; resume with the same settings "
                          "or pick a new run directory (hydra.run.dir=... or another seed)")
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    for group in optimizer.param_groups:
        group["lr"] = lr
    torch.set_rng_state(state["torch_rng"])
    log.info("resuming %s from step %d", run_dir, int(state["step"]))
    return int(state["step"])


def save_train_state(run_dir: Path, model: FrameModel, optimizer: torch.optim.Optimizer, step: int,
                     identity: dict[str, Any]) -> None:
    state = {"step": step, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
             "torch_rng": torch.get_rng_state(), "identity": json.dumps(identity, default=str)}
    with atomic_path(run_dir / TRAIN_STATE) as tmp:
        torch.save(state, tmp)


def foreground_of(cfg: PretrainConfig, dataset: FrameDataset, train_idx: np.ndarray, spec: PreprocessSpec,
                  device: torch.device) -> ForegroundWeighting:
    """Pixel weights from the median frame: the loss uses them with ``weighting=background``, and validation
    always reports the error on the pixels they mark (``foreground_mse``), so runs with and without compare."""
    background = median_frame(dataset, train_idx, cfg.weighting.background_frames, seed=cfg.seed)
    return ForegroundWeighting(background, cfg.weighting.weight, cfg.weighting.threshold, spec.frame_stack, device)


def train_loop(cfg: PretrainConfig, run_dir: Path, model: FrameModel, optimizer: torch.optim.Optimizer,
               dataset: FrameDataset, train_idx: np.ndarray, val_idx: np.ndarray, spec: PreprocessSpec,
               weighting: ForegroundWeighting | None, foreground: ForegroundWeighting, identity: dict[str, Any],
               start_step: int, device: torch.device) -> dict[str, float]:
    """Optimise from ``start_step`` to ``cfg.train.steps``; returns throughput figures."""
    train = cfg.train
    loader = BatchLoader(dataset, train_idx, train.batch_size, frame_stack=spec.frame_stack,
                         seed=cfg.seed + start_step, pin_memory=device.type == "cuda")
    writer = SummaryWriter(str(run_dir / "tb"))
    bar = tqdm(total=train.steps, initial=start_step, desc=f"pretrain {model.kind}", unit="step",
               disable=not cfg.progress)
    started, step = time.perf_counter(), start_step
    model.train()
    try:
        for step in range(start_step + 1, train.steps + 1):
            x = prepare(next(loader), device, train.channels_last)
            out = optimisation_step(model, optimizer, x, weighting, step, train.grad_clip)
            loss = out.loss.item()
            check_finite(loss, step, run_dir, train.lr)

            if step % train.log_every == 0 or step == train.steps:
                elapsed = time.perf_counter() - started
                log_scalars(writer, "train", out.metrics, step, loss=loss, lr=optimizer.param_groups[0]["lr"],
                            frames_per_s=(step - start_step) * train.batch_size / elapsed)
                bar.set_postfix(loss=f"{loss:.1f}", refresh=False)
                if not cfg.progress:  # without a bar, a periodic log line shows progress
                    log.info("step %d/%d  loss %.1f  %.0f frames/s", step, train.steps, loss,
                             (step - start_step) * train.batch_size / elapsed)
            if step % train.val_every == 0 or step == train.steps:
                val = validate(model, dataset, val_idx, spec, train.batch_size, train.val_frames, device,
                               train.channels_last, foreground)
                log_scalars(writer, "val", val, step)
                log.info("step %d  val %s", step, "  ".join(f"{k}={v:.4g}" for k, v in val.items()))
                model.train()
            if step % train.checkpoint_every == 0 or step == train.steps:
                save_train_state(run_dir, model, optimizer, step, identity)
                save_checkpoint(run_dir / CHECKPOINT, model, spec, cfg.env.to_dict(), {"step": step})
            bar.update(1)
    finally:
        bar.close()
        writer.close()
        loader.close()
    elapsed = time.perf_counter() - started
    steps_done = max(step - start_step, 1)
    return {"train_seconds": elapsed, "frames_per_s": steps_done * train.batch_size / elapsed,
            "data_wait_fraction": loader.wait_seconds / elapsed}


def optimisation_step(model: FrameModel, optimizer: torch.optim.Optimizer, x: torch.Tensor,
                      weighting: ForegroundWeighting | None, step: int, grad_clip: float) -> LossOutput:
    """One gradient step on batch ``x``; a non-finite loss skips the update (the caller stops the run)."""
    out = model.training_loss(x, weighting(x) if weighting else None, step=step)
    optimizer.zero_grad(set_to_none=True)
    if torch.isfinite(out.loss):
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        optimizer.step()
    return out


def prepare(batch: torch.Tensor, device: torch.device, channels_last: bool) -> torch.Tensor:
    """uint8 batch -> float [0, 1] on ``device`` (NHWC on CPU when asked)."""
    x = to_unit(batch.to(device, non_blocking=True))
    if channels_last and device.type == "cpu":
        x = x.contiguous(memory_format=torch.channels_last)
    return x


def check_finite(loss: float, step: int, run_dir: Path, lr: float) -> None:
    if not math.isfinite(loss):
        raise TrainingError(
            f"the loss became {loss} at step {step}. Lower the learning rate (train.lr={lr}) or "
            f"train.grad_clip; the last good checkpoint in {run_dir} is kept and the run resumes from it"
        )


@torch.no_grad()
def validate(model: FrameModel, dataset: FrameDataset, val_idx: np.ndarray, spec: PreprocessSpec, batch_size: int,
             max_frames: int, device: torch.device, channels_last: bool,
             foreground: ForegroundWeighting | None = None) -> dict[str, float]:
    """Mean of the model's (unweighted) metrics over up to ``max_frames`` held-out frames.

    With ``foreground``, ``foreground_mse`` is the squared error on the pixels it marks (ball, paddle, ...).
    """
    model.eval()
    picks = val_idx[np.linspace(0, len(val_idx) - 1, min(max_frames, len(val_idx))).astype(int)]
    sums: dict[str, float] = {}
    total = 0
    foreground_err, foreground_pixels = 0.0, 0.0
    for batch in iterate_in_order(dataset, picks, batch_size, spec.frame_stack):
        x = prepare(batch, device, channels_last)
        out = model.training_loss(x, None)
        for key, value in {"loss": out.loss, **out.metrics}.items():
            sums[key] = sums.get(key, 0.0) + float(value) * len(x)
        total += len(x)
        if foreground is not None:  # how well the small moving objects are reconstructed
            mask = (foreground(x) > 1.0).float()
            foreground_err += float(((model.reconstruct(x) - x).pow(2) * mask).sum())
            foreground_pixels += float(mask.sum())
    metrics = {key: value / total for key, value in sums.items()}
    if foreground_pixels:
        metrics["foreground_mse"] = foreground_err / foreground_pixels
    return metrics


def log_scalars(writer: SummaryWriter, prefix: str, metrics: dict[str, Any], step: int, **more: float) -> None:
    for key, value in {**metrics, **more}.items():
        writer.add_scalar(f"{prefix}/{key}", float(value), step)


def finish(cfg: PretrainConfig, run_dir: Path, model: FrameModel, dataset: FrameDataset, val_idx: np.ndarray,
           spec: PreprocessSpec, foreground: ForegroundWeighting, throughput: dict[str, float]) -> dict[str, Any]:
    """Final validation, pictures and ``metrics.json``."""
    device = next(model.parameters()).device
    val = validate(model, dataset, val_idx, spec, cfg.train.batch_size, cfg.train.val_frames, device,
                   cfg.train.channels_last, foreground)
    save_pictures(run_dir, model, dataset, val_idx, spec, cfg.seed)
    metrics = {
        "completed": True, "steps": cfg.train.steps, "model": model.kind, "env": cfg.env.id, "device": str(device),
        "vaerl_version": vaerl.__version__, "val": val, **throughput,
        "dataset": {"path": str(dataset.path), "frames": len(dataset), "episodes": dataset.meta.num_episodes,
                    "val_frames": len(val_idx)},
        "parameters": sum(p.numel() for p in model.parameters()),
    }
    write_json(run_dir / METRICS, metrics)
    log.info("wrote %s, recon.png and metrics.json to %s", CHECKPOINT, run_dir)
    return metrics


@torch.no_grad()
def save_pictures(run_dir: Path, model: FrameModel, dataset: FrameDataset, val_idx: np.ndarray,
                  spec: PreprocessSpec, seed: int, n: int = 8) -> None:
    """``recon.png`` (held-out originals above reconstructions) and, for a VAE, ``samples.png``."""
    model.eval()
    device = next(model.parameters()).device
    rng = np.random.default_rng(seed)
    picks = np.sort(rng.choice(val_idx, size=min(n, len(val_idx)), replace=False))
    frames = torch.from_numpy(dataset.stacked_frames(picks, spec.frame_stack))
    recon = model.reconstruct(to_unit(frames.to(device)))
    per_frame = spec.channels_per_frame
    save_frame_grid(run_dir / "recon.png", [frames, recon], per_frame, scale=3)
    if isinstance(model, VAE):
        generator = torch.Generator(device=device).manual_seed(seed)
        samples = model.sample(2 * n, generator=generator)
        save_frame_grid(run_dir / "samples.png", [samples[:n], samples[n:]], per_frame, scale=3)

