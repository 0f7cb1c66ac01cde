"""One evaluation report per encoder: pictures, a video, probes, the VQ-VAE prior, and ``metrics.json``.

:func:`evaluate_encoder` writes into ``out_dir``:

* ``reconstructions.png`` – held-out frames (top) above their reconstructions (bottom)
* ``samples.png``         – decoder means of prior samples (VAE: N(0, I); VQ-VAE: the PixelCNN prior)
* ``traversals.png``      – one row per latent dimension (see :mod:`vaerl.evaluation.traversals`)
* ``interpolations.png``  – one row per pair of held-out frames
* ``reconstruction.gif``  – a held-out episode, its reconstruction and the error, side by side
* ``probes.md`` / ``probes.json`` – the linear-probe table (games with RAM annotations)
* ``metrics.json``        – every number above, plus reconstruction metrics on held-out episodes

Everything is computed on held-out (test) episodes of a random-agent dataset, split exactly as the
probes split it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vaerl.data import EpisodeSplit, FrameDataset, iterate_in_order, split_episodes
from vaerl.encoder import Encoder
from vaerl.evaluation.annotations import GameAnnotation
from vaerl.evaluation.metrics import heldout_metrics
from vaerl.evaluation.prior import PriorSettings, fit_prior, sample_frames
from vaerl.evaluation.probes import BASELINES, ProbeSettings, probe_encoder
from vaerl.evaluation.traversals import interpolate, latent_traversal
from vaerl.evaluation.video import reconstruction_video
from vaerl.io import atomic_write, write_json
from vaerl.models import FrameModel
from vaerl.models.blocks import to_unit
from vaerl.viz import save_frame_grid, save_reconstructions, save_samples

log = logging.getLogger(__name__)

METRICS = "metrics.json"


@dataclass
class ReportSettings:
    """What goes into the report's pictures and video."""

    reconstructions: int = 12
    """Held-out frames shown in reconstructions.png."""
    samples: int = 24
    traversal_steps: int = 9
    traversal_rows: int = 16
    """At most this many latent dimensions (VAE: the highest-KL ones) in traversals.png."""
    traversal_span: float = 3.0
    interpolations: int = 4
    interpolation_steps: int = 10
    video_frames: int = 200
    video_fps: float = 15.0
    video_format: str = "gif"
    """``gif`` (always available) or ``mp4`` (needs imageio-ffmpeg)."""
    scale: int = 2
    """Pixel upscaling of pictures and video."""
    metric_frames: int = 4096
    """Held-out frames used for the reconstruction metrics."""


def evaluate_encoder(
    encoder: Encoder,
    dataset: FrameDataset,
    out_dir: str | Path,
    *,
    annotation: GameAnnotation | None = None,
    probe: ProbeSettings | None = None,
    prior: PriorSettings | None = None,
    report: ReportSettings | None = None,
    baselines: tuple[str, ...] | list[str] = BASELINES,
    prior_path: str | Path | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """Write the evaluation report of ``encoder`` on ``dataset`` into ``out_dir``; returns its metrics.

    Probes run when ``annotation`` is given and the dataset holds RAM. For a VQ-VAE a PixelCNN prior
    is fitted (or reused from ``prior_path``) and sampled.
    """
    probe, prior, report = probe or ProbeSettings(), prior or PriorSettings(), report or ReportSettings()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model, spec = encoder.model, encoder.spec
    per_frame = spec.channels_per_frame
    split = split_episodes(dataset.episodes, val_fraction=probe.val_fraction, test_fraction=probe.test_fraction,
                           min_length=probe.min_episode_length, seed=seed)
    rng = np.random.default_rng(seed)
    metrics: dict[str, Any] = {
        "encoder": {"kind": encoder.kind, "env": encoder.info.env.get("id"), "input_shape": list(spec.input_shape),
                    "latent_dim": encoder.latent_dim("mean"), "vaerl_version": encoder.info.vaerl_version},
        "dataset": {"path": str(dataset.path), "frames": len(dataset), "test_frames": len(split.test)},
    }

    # reconstruction quality on held-out episodes
    metrics["reconstruction"] = reconstruction_metrics(encoder, dataset, _spread(split.test, report.metric_frames))
    picks = _spread(split.test, report.reconstructions)
    frames = torch.from_numpy(dataset.stacked_frames(picks, spec.frame_stack))
    x = to_unit(frames.to(encoder.device))
    save_reconstructions(out / "reconstructions.png", model, frames, per_frame, report.scale)

    # samples: from the model's own prior (VAE: N(0, I)), else from a PixelCNN prior over its code grids
    if model.can_sample_prior:
        samples = model.sample_prior(report.samples, generator=torch.Generator(device=encoder.device).manual_seed(seed))
    else:
        code_prior, metrics["prior"] = fit_prior(encoder, dataset, split, prior, path=prior_path, seed=seed)
        samples = sample_frames(encoder, code_prior, report.samples, seed=seed, temperature=prior.temperature)
    save_samples(out / "samples.png", samples, per_frame, report.scale)

    # traversals around one held-out frame, interpolations between pairs of them
    metrics["traversal"] = save_traversals(out / "traversals.png", model, x, report, per_frame)
    pairs = rng.choice(split.test, size=(report.interpolations, 2), replace=len(split.test) < 2 * report.interpolations)
    rows = []
    for a, b in pairs:
        ends = to_unit(torch.from_numpy(dataset.stacked_frames(np.array([a, b]), spec.frame_stack)).to(encoder.device))
        rows.append(interpolate(model, ends[:1], ends[1:], report.interpolation_steps))
    save_frame_grid(out / "interpolations.png", rows, per_frame, report.scale)

    # one held-out episode as a video
    episode = _first_test_episode(dataset, split)[: report.video_frames]
    video = out / f"reconstruction.{report.video_format}"
    reconstruction_video(video, model, dataset.stacked_frames(episode, spec.frame_stack),
                         channels_per_frame=per_frame, fps=report.video_fps, scale=report.scale)
    metrics["video"] = {"path": video.name, "frames": len(episode)}

    # linear probes
    if annotation is not None and "ram" in dataset.extra_names:
        probe_report = probe_encoder(encoder, dataset, annotation, settings=probe, baselines=baselines, seed=seed)
        write_json(out / "probes.json", probe_report.to_dict())
        atomic_write(out / "probes.md", lambda tmp: tmp.write_text(
            f"# Linear probes: {annotation.name}\n\n{probe_report.table()}\n"))
        metrics["probes"] = {"game": annotation.name, "mean_f1": probe_report.to_dict()["mean_f1"],
                             "f1": {v: probe_report.scores["encoder"][v]["f1"] for v in probe_report.variables},
                             "dropped": list(probe_report.dropped), "reference": probe_report.reference}
    else:
        why = "no RAM annotations for this env" if annotation is None else "the dataset has no RAM"
        metrics["probes"] = {"skipped": why}

    metrics["files"] = sorted({p.name for p in out.iterdir() if not p.name.startswith(".")} | {METRICS})
    write_json(out / METRICS, metrics)
    return metrics


def reconstruction_metrics(encoder: Encoder, dataset: FrameDataset, indices: np.ndarray,
                           batch_size: int = 256) -> dict[str, float]:
    """Pixel MSE of decoder means, plus the model's own (unweighted) loss metrics, averaged over frames."""
    batches = (to_unit(batch.to(encoder.device))
               for batch in iterate_in_order(dataset, indices, batch_size, encoder.spec.frame_stack))
    return heldout_metrics(encoder.model, batches) | {"frames": len(indices)}


def save_traversals(path: Path, model: FrameModel, x: torch.Tensor, report: ReportSettings,
                    per_frame: int) -> dict[str, Any]:
    """Write ``traversals.png`` around the first frame of ``x``; returns which latent axes are shown."""
    axes = model.latent_axes(x, report.traversal_rows)
    info: dict[str, Any] = {"span": report.traversal_span, "steps": report.traversal_steps,
                            "rows": axes.description, "dims": axes.dims, **axes.details}
    grid = latent_traversal(model, x[:1], steps=report.traversal_steps, span=report.traversal_span, dims=axes.dims)
    save_frame_grid(path, list(grid), per_frame, report.scale)
    return info


def summary(metrics: dict[str, Any], out_dir: str | Path) -> str:
    """A few lines for the terminal: where the report is and its headline numbers."""
    enc, rec = metrics["encoder"], metrics["reconstruction"]
    lines = [f"{enc['kind']} encoder for {enc['env']} (input {tuple(enc['input_shape'])}, "
             + f"latent {enc['latent_dim']}) -> {out_dir}",
             f"  reconstruction: MSE {rec['mse']:.5f} per pixel on {rec['frames']} held-out frames"
             + (f", {rec['bits_per_dim']:.3f} bits/dim" if "bits_per_dim" in rec else "")]
    if "prior" in metrics:
        p = metrics["prior"]
        lines.append(f"  prior: {p['test_bits_per_code']:.3f} bits/code on held-out episodes "
                     f"(unigram {p['unigram_bits_per_code']:.3f}, uniform {p['uniform_bits_per_code']:.1f})")
    probes = metrics.get("probes", {})
    if "mean_f1" in probes:
        f1 = probes["mean_f1"]
        parts = [f"{k.replace('_', ' ')} {v:.2f}" for k, v in f1.items() if k != "encoder"]
        ref = [f"{k} {v:.2f}" for k, v in probes.get("reference", {}).items()]
        lines.append(f"  probes ({probes['game']}): mean F1 {f1['encoder']:.2f}"
                     + (f" (baselines: {', '.join(parts)})" if parts else "")
                     + (f"; published: {', '.join(ref)}" if ref else ""))
    else:
        lines.append(f"  probes: skipped ({probes.get('skipped', 'not run')})")
    lines.append("  files: " + " ".join(metrics.get("files", [])))
    return "\n".join(lines)


def _spread(indices: np.ndarray, n: int) -> np.ndarray:
    """Up to ``n`` indices evenly spread over ``indices``."""
    if len(indices) <= n:
        return np.asarray(indices)
    return np.asarray(indices)[np.linspace(0, len(indices) - 1, n).astype(int)]


def _first_test_episode(dataset: FrameDataset, split: EpisodeSplit) -> np.ndarray:
    first = dataset.episodes[split.test[0]]
    return split.test[dataset.episodes[split.test] == first]


__all__ = ["METRICS", "ReportSettings", "evaluate_encoder", "reconstruction_metrics", "summary"]
