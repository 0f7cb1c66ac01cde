"""Looking at what a latent space learned: traversals and interpolations, as decoder means.

* **Traversal** (Higgins et al. 2017): encode one frame, then sweep one latent axis over a range
  while the others stay fixed; one row per axis. The model's latent contract says what an axis
  is and how it moves (:meth:`vaerl.models.FrameModel.traverse`): a VAE's rows are its latent
  dimensions, ordered by their KL to the prior on real frames (the dimensions the model actually
  uses come first) and swept over the prior's ``[-span, span]``; a VQ-VAE's latent is a grid of
  code vectors, so its rows are the ``embedding_dim`` channels of those vectors, each shifted over
  the whole grid by ``[-span, span]`` times that channel's spread in the codebook.
* **Interpolation**: decode points on the straight line between the ``mean`` latents of two frames
  (VAE posterior means; VQ-VAE quantised grids, decoded without re-snapping to codes).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from vaerl.models import FrameModel


@torch.no_grad()
def latent_traversal(
    model: FrameModel,
    frame: torch.Tensor,
    *,
    steps: int = 9,
    span: float = 3.0,
    dims: Sequence[int] | None = None,
) -> torch.Tensor:
    """Decoder means ``(rows, steps, C, H, W)`` sweeping each latent axis in ``dims`` around ``frame``.

    ``frame`` is one float frame ``(1, C, H, W)`` in [0, 1]; ``dims`` defaults to every axis
    (``model.num_axes``: VAE latent dimensions / VQ-VAE code channels).
    """
    values = torch.linspace(-span, span, steps, device=frame.device)
    z = model.encode_latent(frame, "mean")[0]
    dims = range(model.num_axes) if dims is None else dims
    return torch.stack([model.decode_latent(model.traverse(z, d, values), "mean") for d in dims])


@torch.no_grad()
def interpolate(model: FrameModel, frame_a: torch.Tensor, frame_b: torch.Tensor, steps: int = 10) -> torch.Tensor:
    """Decoder means ``(steps, C, H, W)`` along the line between the latents of two frames ``(1, C, H, W)``."""
    start, end = model.encode_latent(frame_a, "mean"), model.encode_latent(frame_b, "mean")
    weights = torch.linspace(0.0, 1.0, steps, device=start.device).view(-1, 1)
    return model.decode_latent(start + weights * (end - start), "mean")


__all__ = ["interpolate", "latent_traversal"]
