"""Fitting, reusing and scoring a PixelCNN prior for one VQ-VAE encoder.

The prior is trained on the code grids of training episodes, early-stopped on validation
episodes and scored on held-out test episodes, in bits per code. Two reference points make that
number readable: a uniform prior costs ``log2(num_codes)`` bits and the best position-independent
(unigram) prior costs the cross-entropy of the test codes under the training code frequencies.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from gymnasium import spaces

from vaerl.data import EpisodeSplit, FrameDataset
from vaerl.encoder import Encoder
from vaerl.errors import CheckpointError
from vaerl.models.pixelcnn import (
    PixelCNNConfig,
    PixelCNNPrior,
    codebook_fingerprint,
    load_prior,
    mean_nll_bits,
    save_prior,
    train_prior,
)

log = logging.getLogger(__name__)

PRIOR_FILE = "prior.safetensors"


@dataclass
class PriorSettings:
    """Size and training budget of the PixelCNN prior (sized to train in minutes on a CPU)."""

    channels: int = 32
    layers: int = 6
    kernel_size: int = 3
    steps: int = 1500
    batch_size: int = 32
    lr: float = 1e-3
    eval_every: int = 250
    temperature: float = 1.0
    """Sampling temperature of ``samples.png`` (1 = the model's distribution)."""
    reuse: bool = True
    """Load ``prior.safetensors`` beside the encoder when it was fitted to this codebook with these settings."""


def training_settings(settings: PriorSettings) -> dict[str, Any]:
    """The settings that change a trained prior (a saved prior is reused only when they match)."""
    return {k: v for k, v in dataclasses.asdict(settings).items() if k not in ("reuse", "temperature")}


def code_grids(encoder: Encoder, dataset: FrameDataset, indices: np.ndarray, batch_size: int = 256) -> torch.Tensor:
    """Code indices ``(N, h, w)`` (int64, CPU) of the frames ``indices``."""
    grid = encoder.model.latent_shape("indices")
    return encoder.encode_dataset(dataset, indices, "indices", batch_size).view(-1, *grid).long()


def unigram_bits(train_codes: torch.Tensor, test_codes: torch.Tensor, num_codes: int) -> float:
    """Bits per code of the test codes under the (add-one smoothed) training code frequencies."""
    counts = torch.bincount(train_codes.flatten(), minlength=num_codes).double() + 1.0
    log_probs = torch.log2(counts / counts.sum())
    return float(-log_probs[test_codes.flatten()].mean())


def fit_prior(
    encoder: Encoder,
    dataset: FrameDataset,
    split: EpisodeSplit,
    settings: PriorSettings,
    *,
    path: str | Path | None = None,
    seed: int = 0,
) -> tuple[PixelCNNPrior, dict[str, Any]]:
    """Train (or reload from ``path``) the prior over the code grids of an encoder with ``mode="indices"``
    (a VQ-VAE); returns it and its metrics."""
    model = encoder.model
    code_space = model.latent_space("indices") if "indices" in model.latent_modes else None
    if not isinstance(code_space, spaces.MultiDiscrete):
        raise TypeError(f"a code prior needs an encoder with discrete codes (mode='indices', a VQ-VAE); this one is "
                        f"a {encoder.kind}")
    fingerprint = codebook_fingerprint(model.codebook)
    grid = model.latent_shape("indices")
    num_codes = int(code_space.nvec.max())
    config = PixelCNNConfig(num_codes, grid, settings.channels, settings.layers, settings.kernel_size)
    codes = {part: code_grids(encoder, dataset, getattr(split, part)) for part in ("train", "val", "test")}

    prior, training = None, None
    if path is not None and settings.reuse and Path(path).exists():
        try:
            loaded, meta = load_prior(path, encoder.device, codebook=fingerprint)
            if loaded.config == config and meta["metrics"].get("training") == training_settings(settings):
                prior = loaded
                log.info("reusing the PixelCNN prior at %s", path)
            else:
                log.info("the prior at %s was trained with other settings; training a new one", path)
        except CheckpointError as exc:
            log.warning("not reusing %s: %s", path, exc)
    if prior is None:
        torch.manual_seed(seed)
        prior = PixelCNNPrior(config).to(encoder.device)
        log.info("training a PixelCNN prior on %d code grids of %s", len(codes["train"]), grid)
        training = train_prior(prior, codes["train"], codes["val"], steps=settings.steps,
                               batch_size=settings.batch_size, lr=settings.lr, eval_every=settings.eval_every,
                               seed=seed)

    metrics: dict[str, Any] = {
        "test_bits_per_code": mean_nll_bits(prior, codes["test"]),
        "val_bits_per_code": mean_nll_bits(prior, codes["val"]),
        "unigram_bits_per_code": unigram_bits(codes["train"], codes["test"], config.num_codes),
        "uniform_bits_per_code": math.log2(config.num_codes),
        "test_grids": len(codes["test"]),
        "train_grids": len(codes["train"]),
        "parameters": sum(p.numel() for p in prior.parameters()),
        "reused": training is None,
        "training": training_settings(settings),
    }
    if training is not None:
        metrics.update(best_step=training.best_step, history=training.history)
        if path is not None:
            save_prior(path, prior, codebook=fingerprint, metrics={k: v for k, v in metrics.items() if k != "history"})
    return prior, metrics


@torch.no_grad()
def sample_frames(encoder: Encoder, prior: PixelCNNPrior, n: int, *, seed: int = 0,
                  temperature: float = 1.0) -> torch.Tensor:
    """Decoder means of ``n`` code grids sampled from ``prior``."""
    generator = torch.Generator(device=encoder.device).manual_seed(seed)
    grids = prior.sample(n, generator=generator, temperature=temperature)
    return encoder.decode(grids.flatten(1), "indices")


__all__ = ["PRIOR_FILE", "PriorSettings", "code_grids", "fit_prior", "sample_frames", "unigram_bits"]
