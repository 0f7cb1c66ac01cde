"""Held-out reconstruction metrics of a frame model: pretraining's validation and the evaluation report."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch

from vaerl.models import FrameModel


@torch.no_grad()
def heldout_metrics(
    model: FrameModel,
    batches: Iterable[torch.Tensor],
    foreground: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> dict[str, float]:
    """Means over all frames of ``batches`` (float frames in [0, 1], the model in eval mode).

    Returns the model's unweighted ``loss`` and its metrics, ``mse`` (pixel MSE of the decoder
    means) and, given ``foreground`` pixel weights (:class:`vaerl.training.weighting.ForegroundWeighting`),
    ``foreground_mse``: the squared error on the pixels they mark (ball, paddle, ...), so runs with
    and without loss weighting compare on the small moving objects.
    """
    sums: dict[str, float] = {}
    total = 0
    foreground_err, foreground_pixels = 0.0, 0.0
    for x in batches:
        out = model.training_loss(x)
        recon = model.reconstruct(x)
        for key, value in {"loss": out.loss, **out.metrics, "mse": (recon - x).pow(2).mean()}.items():
            sums[key] = sums.get(key, 0.0) + float(value) * len(x)
        total += len(x)
        if foreground is not None:
            mask = (foreground(x) > 1.0).float()
            foreground_err += float(((recon - x).pow(2) * mask).sum())
            foreground_pixels += float(mask.sum())
    metrics = {key: value / max(total, 1) for key, value in sums.items()}
    if foreground_pixels:
        metrics["foreground_mse"] = foreground_err / foreground_pixels
    return metrics


__all__ = ["heldout_metrics"]
