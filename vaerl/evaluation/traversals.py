"""Looking at what a latent space learned: traversals and interpolations, as decoder means.

* **Traversal** (Higgins et al. 2017): encode one frame, then sweep one latent dimension over a
  range while the others stay fixed; one row per dimension. For a VAE the rows are the latent
  dimensions, ordered by their KL to the prior on real frames (the dimensions the model actually
  uses come first) and swept over the prior's ``[-span, span]``. A VQ-VAE's latent is a grid of
  code vectors, so its rows are the ``embedding_dim`` channels of those vectors, each shifted over
  the whole grid by ``[-span, span]`` times that channel's spread in the codebook.
* **Interpolation**: decode points on the straight line between the latents of two frames (VAE
  posterior means; VQ-VAE quantised grids, decoded without re-snapping to codes).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from vaerl.models import VAE, VQVAE, FrameModel
from vaerl.models.vae import gaussian_kl


@torch.no_grad()
def kl_per_dimension(model: VAE, frames: torch.Tensor) -> torch.Tensor:
    """Mean KL(q(z_d|x) || N(0, 1)) of each latent dimension over ``frames`` (float in [0, 1])."""
    mu, logvar = model.encode(frames)
    return gaussian_kl(mu, logvar).mean(0)


@torch.no_grad()
def latent_traversal(
    model: FrameModel,
    frame: torch.Tensor,
    *,
    steps: int = 9,
    span: float = 3.0,
    dims: Sequence[int] | None = None,
) -> torch.Tensor:
    """Decoder means ``(rows, steps, C, H, W)`` sweeping each latent dimension in ``dims`` around ``frame``.

    ``frame`` is one float frame ``(1, C, H, W)`` in [0, 1]; ``dims`` defaults to every dimension
    (VAE latent dimensions / VQ-VAE code channels).
    """
    values = torch.linspace(-span, span, steps, device=frame.device)
    if isinstance(model, VAE):
        z = model.encode(frame)[0][0]
        dims = range(z.numel()) if dims is None else dims
        rows = []
        for d in dims:
            # the other dimensions stay at the frame's posterior mean; dimension d sweeps the prior's range
            grid = z.repeat(steps, 1)
            grid[:, d] = values
            rows.append(model.decode(grid))
        return torch.stack(rows)
    if isinstance(model, VQVAE):
        quantized = model.encode(frame).quantized[0]  # (D, h, w)
        spread = model.quantizer.codebook.std(0)  # (D,): how far codes differ along each channel
        dims = range(quantized.shape[0]) if dims is None else dims
        rows = []
        for d in dims:
            grid = quantized.repeat(steps, 1, 1, 1)
            grid[:, d] += (values * spread[d])[:, None, None]
            rows.append(model.decode(grid))
        return torch.stack(rows)
    raise TypeError(f"traversals need a VAE or VQVAE, got {type(model).__name__}")


@torch.no_grad()
def interpolate(model: FrameModel, frame_a: torch.Tensor, frame_b: torch.Tensor, steps: int = 10) -> torch.Tensor:
    """Decoder means ``(steps, C, H, W)`` along the line between the latents of two frames ``(1, C, H, W)``."""
    if isinstance(model, VAE):
        start, end = model.encode(frame_a)[0], model.encode(frame_b)[0]
    elif isinstance(model, VQVAE):
        start, end = model.encode(frame_a).quantized, model.encode(frame_b).quantized
    else:
        raise TypeError(f"interpolation needs a VAE or VQVAE, got {type(model).__name__}")
    weights = torch.linspace(0.0, 1.0, steps, device=start.device).view(-1, *[1] * (start.ndim - 1))
    return model.decode(start + weights * (end - start))


__all__ = ["interpolate", "kl_per_dimension", "latent_traversal"]
