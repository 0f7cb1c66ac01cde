"""An autoregressive prior over VQ-VAE code grids: a gated PixelCNN (van den Oord et al. 2016).

The VQ-VAE paper (van den Oord et al. 2017, sec. 4) fits a PixelCNN to the grid of code indices
so that new frames can be generated: sample a code grid position by position, then decode it.

The network is the gated PixelCNN of "Conditional Image Generation with PixelCNN Decoders"
(van den Oord et al. 2016b): a *vertical* stack sees every row above the current one and a
*horizontal* stack sees the current row to the left, and the vertical stack feeds the horizontal
one. Together they cover everything before a position in raster order without the "blind spot" of
the original PixelCNN. Causality comes from masked convolutions:

* type ``A`` (first layer) hides the position itself,
* type ``B`` (later layers) lets it through, because after a type-A layer the features at a
  position only summarise earlier positions.

Priors are saved as safetensors with JSON metadata (never pickle), fingerprinted against the
codebook they were trained on so that a prior is never used with a retrained encoder.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from vaerl.errors import CheckpointError
from vaerl.tensorfile import load_state_strict, load_tensor_file, save_tensor_file

log = logging.getLogger(__name__)

FORMAT = "vaerl-pixelcnn-prior"
FORMAT_VERSION = 1
MASK_TYPES = ("A", "B")


# ---------------------------------------------------------------------------------------------- masks
def causal_mask(kernel: tuple[int, int], mask_type: str, stack: str) -> torch.Tensor:
    """0/1 kernel mask ``(kh, kw)`` so a conv only sees positions before the centre in raster order.

    ``stack`` is ``"full"`` (the original PixelCNN: rows above + left part of the centre row),
    ``"vertical"`` (rows above only; type B adds the whole centre row) or ``"horizontal"``
    (a ``1 x k`` kernel: the left part of the centre row).
    """
    if mask_type not in MASK_TYPES:
        raise ValueError(f"mask_type must be one of {MASK_TYPES}, got {mask_type!r}")
    kh, kw = kernel
    if kh % 2 == 0 or kw % 2 == 0:
        raise ValueError(f"masked convolutions need odd kernel sizes, got {kernel}")
    ch, cw = kh // 2, kw // 2
    mask = torch.zeros(kh, kw)
    if stack == "vertical":
        mask[: ch + (mask_type == "B")] = 1.0
    elif stack == "horizontal":
        if kh != 1:
            raise ValueError(f"the horizontal stack uses 1 x k kernels, got {kernel}")
        mask[0, : cw + (mask_type == "B")] = 1.0
    elif stack == "full":
        mask[:ch] = 1.0
        mask[ch, : cw + (mask_type == "B")] = 1.0
    else:
        raise ValueError(f"stack must be 'full', 'vertical' or 'horizontal', got {stack!r}")
    return mask


class MaskedConv2d(nn.Conv2d):
    """A same-size convolution whose kernel is multiplied by a fixed :func:`causal_mask`."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | tuple[int, int],
        mask_type: str,
        stack: str = "full",
    ) -> None:
        kernel = (kernel_size, kernel_size) if isinstance(kernel_size, int) else tuple(kernel_size)
        super().__init__(in_channels, out_channels, kernel, padding=(kernel[0] // 2, kernel[1] // 2))
        self.mask_type, self.stack = mask_type, stack
        self.register_buffer("mask", causal_mask(kernel, mask_type, stack), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.weight * self.mask, self.bias, self.stride, self.padding)


def gate(x: torch.Tensor) -> torch.Tensor:
    """Gated activation tanh(a) * sigmoid(b) over the two channel halves (van den Oord et al. 2016b, eq. 2)."""
    a, b = x.chunk(2, dim=1)
    return torch.tanh(a) * torch.sigmoid(b)


class GatedBlock(nn.Module):
    """One gated PixelCNN layer: vertical stack -> horizontal stack, residual on the horizontal one."""

    def __init__(self, channels: int, kernel_size: int, mask_type: str) -> None:
        super().__init__()
        self.vertical = MaskedConv2d(channels, 2 * channels, kernel_size, mask_type, "vertical")
        self.horizontal = MaskedConv2d(channels, 2 * channels, (1, kernel_size), mask_type, "horizontal")
        self.vertical_to_horizontal = nn.Conv2d(2 * channels, 2 * channels, 1)
        self.horizontal_out = nn.Conv2d(channels, channels, 1)
        # the first layer's input holds the current position itself, so it must not be added back
        self.residual = mask_type == "B"

    def forward(self, x_v: torch.Tensor, x_h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        v = self.vertical(x_v)
        # vertical features at row i only summarise rows < i, so the horizontal stack may use them as is
        h = self.horizontal(x_h) + self.vertical_to_horizontal(v)
        out_h = self.horizontal_out(gate(h))
        return gate(v), out_h + x_h if self.residual else out_h


# ---------------------------------------------------------------------------------------------- the prior
@dataclass
class PixelCNNConfig:
    num_codes: int = 256
    """Size of the VQ-VAE codebook (classes per position)."""
    grid_size: tuple[int, int] = (10, 10)
    """(height, width) of the code grid the prior was trained on (sampling default)."""
    channels: int = 64
    """Width of both stacks."""
    layers: int = 8
    """Gated blocks; the first is type A, the rest type B."""
    kernel_size: int = 3
    """Odd kernel size of the masked convolutions."""

    def __post_init__(self) -> None:
        self.grid_size = tuple(int(s) for s in self.grid_size)  # type: ignore[assignment]
        if self.kernel_size < 3 or self.kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd and >= 3, got {self.kernel_size}")
        if self.layers < 1 or self.num_codes < 2:
            raise ValueError(f"need layers >= 1 and num_codes >= 2, got {self.layers} and {self.num_codes}")


class PixelCNNPrior(nn.Module):
    """p(c) = prod_i p(c_i | c_<i) over a grid of code indices in raster order."""

    def __init__(self, config: PixelCNNConfig) -> None:
        super().__init__()
        self.config = config
        c = config.channels
        self.embedding = nn.Embedding(config.num_codes, c)
        self.blocks = nn.ModuleList(
            GatedBlock(c, config.kernel_size, "A" if i == 0 else "B") for i in range(config.layers)
        )
        self.head = nn.Sequential(nn.ReLU(), nn.Conv2d(c, c, 1), nn.ReLU(), nn.Conv2d(c, config.num_codes, 1))

    def forward(self, indices: torch.Tensor) -> torch.Tensor:
        """Logits ``(N, num_codes, H, W)``; those at a position depend only on earlier positions."""
        self._check_indices(indices)
        x = self.embedding(indices).permute(0, 3, 1, 2)  # (N, H, W, C) -> (N, C, H, W)
        x_v, x_h = x, x
        for block in self.blocks:
            x_v, x_h = block(x_v, x_h)
        return self.head(x_h)

    def nll_bits(self, indices: torch.Tensor) -> torch.Tensor:
        """-log2 p(grid) / (H * W) for each grid: bits per code, shape ``(N,)``."""
        nats = F.cross_entropy(self(indices), indices, reduction="none").flatten(1).mean(1)
        return nats / math.log(2)

    @torch.no_grad()
    def sample(
        self,
        n: int,
        grid_size: tuple[int, int] | None = None,
        generator: torch.Generator | None = None,
        temperature: float = 1.0,
    ) -> torch.Tensor:
        """Draw ``n`` code grids ``(n, H, W)`` one position at a time in raster order."""
        height, width = grid_size or self.config.grid_size
        device = self.embedding.weight.device
        grid = torch.zeros(n, height, width, dtype=torch.long, device=device)
        for i in range(height):
            for j in range(width):
                # positions >= (i, j) still hold placeholders; causality makes them irrelevant here
                logits = self(grid)[:, :, i, j] / temperature
                probs = torch.softmax(logits.float(), dim=1)
                grid[:, i, j] = torch.multinomial(probs, 1, generator=generator).squeeze(1)
        return grid

    def _check_indices(self, indices: torch.Tensor) -> None:
        if indices.ndim != 3 or indices.dtype != torch.long:
            raise ValueError(f"expected a long tensor of code grids (N, H, W), got {indices.dtype} {tuple(indices.shape)}")
        if indices.numel() and (int(indices.min()) < 0 or int(indices.max()) >= self.config.num_codes):
            raise ValueError(f"code indices must lie in [0, {self.config.num_codes}), got "
                             f"[{int(indices.min())}, {int(indices.max())}]")


# ---------------------------------------------------------------------------------------------- training
class PriorTraining(NamedTuple):
    """Outcome of :func:`train_prior`: the best validation bits per code and the curve leading there."""

    best_val_bits: float
    best_step: int
    history: list[dict[str, float]]


def mean_nll_bits(prior: PixelCNNPrior, codes: torch.Tensor, batch_size: int = 256) -> float:
    """Average bits per code of ``prior`` on grids ``codes`` (any device; moved batch by batch)."""
    device = prior.embedding.weight.device
    was_training = prior.training
    prior.eval()
    total = 0.0
    with torch.no_grad():
        for start in range(0, len(codes), batch_size):
            batch = codes[start:start + batch_size].to(device).long()
            total += float(prior.nll_bits(batch).sum())
    prior.train(was_training)
    return total / max(1, len(codes))


def train_prior(
    prior: PixelCNNPrior,
    train_codes: torch.Tensor,
    val_codes: torch.Tensor,
    *,
    steps: int = 2000,
    batch_size: int = 64,
    lr: float = 1e-3,
    eval_every: int = 250,
    max_val: int = 2000,
    seed: int = 0,
) -> PriorTraining:
    """Fit ``prior`` to code grids by maximum likelihood (Adam); keep the weights best on ``val_codes``.

    Codes stay on their device (CPU is fine) and minibatches move to the prior's device.
    """
    if len(train_codes) == 0 or len(val_codes) == 0:
        raise ValueError("train_prior needs non-empty train and validation code sets")
    device = prior.embedding.weight.device
    rng = torch.Generator().manual_seed(seed)
    val_subset = val_codes[torch.randperm(len(val_codes), generator=rng)[:max_val]]
    optimizer = torch.optim.Adam(prior.parameters(), lr=lr)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, steps))
    best = (mean_nll_bits(prior, val_subset), 0)
    best_state = {k: v.detach().clone() for k, v in prior.state_dict().items()}
    history: list[dict[str, float]] = [{"step": 0, "val_bits": best[0]}]
    running: list[float] = []
    prior.train()
    for step in range(1, steps + 1):
        picks = torch.randint(0, len(train_codes), (batch_size,), generator=rng)
        batch = train_codes[picks].to(device).long()
        loss = prior.nll_bits(batch).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        running.append(float(loss.detach()))
        if step % eval_every == 0 or step == steps:
            val_bits = mean_nll_bits(prior, val_subset)
            history.append({"step": step, "train_bits": float(np.mean(running)), "val_bits": val_bits})
            log.info("prior step %d: train %.3f bits/code, val %.3f bits/code", step, np.mean(running), val_bits)
            running = []
            if val_bits < best[0]:
                best = (val_bits, step)
                best_state = {k: v.detach().clone() for k, v in prior.state_dict().items()}
    prior.load_state_dict(best_state)
    prior.eval()
    return PriorTraining(best[0], best[1], history)


# ---------------------------------------------------------------------------------------------- save / load
def codebook_fingerprint(codebook: torch.Tensor) -> str:
    """A short hash of a VQ-VAE codebook: a prior is only valid for the codebook it was fitted to."""
    data = codebook.detach().float().cpu().contiguous().numpy().tobytes()
    return hashlib.sha1(data).hexdigest()[:16]


def save_prior(
    path: str | Path,
    prior: PixelCNNPrior,
    *,
    codebook: str,
    metrics: dict[str, Any] | None = None,
) -> Path:
    """Write the prior as safetensors with JSON metadata, atomically. ``codebook`` is its fingerprint."""
    return save_tensor_file(path, prior.state_dict(), kind=FORMAT, version=FORMAT_VERSION,
                            config=dataclasses.asdict(prior.config), codebook=codebook, metrics=metrics or {})


def load_prior(
    path: str | Path,
    device: str | torch.device = "cpu",
    *,
    codebook: str | None = None,
) -> tuple[PixelCNNPrior, dict[str, Any]]:
    """Load a prior saved by :func:`save_prior`; ``codebook`` asserts the fingerprint it was fitted to.

    Returns the prior in eval mode and its metadata (``config``, ``codebook``, ``metrics``).
    """
    state, meta = load_tensor_file(path, kind=FORMAT, version=FORMAT_VERSION, what="PixelCNN prior",
                                   fix="delete it and train the prior again with scripts/evaluate_encoder.py")
    if codebook is not None and meta.get("codebook") != codebook:
        raise CheckpointError(f"the prior at {path} was fitted to another codebook ({meta.get('codebook')} != "
                              f"{codebook}): the encoder was retrained; delete the prior and train it again")
    try:
        prior = PixelCNNPrior(PixelCNNConfig(**meta["config"]))
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{path} has damaged metadata ({exc!r}); delete it and train the prior again") from exc
    load_state_strict(prior, state, path, "PixelCNN prior")
    return prior.to(device).eval(), meta


__all__ = ["FORMAT", "GatedBlock", "MaskedConv2d", "PixelCNNConfig", "PixelCNNPrior", "PriorTraining",
           "causal_mask", "codebook_fingerprint", "load_prior", "mean_nll_bits", "save_prior", "train_prior"]
