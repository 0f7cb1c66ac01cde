"""A pretrained encoder ready for inference: model in eval mode + the preprocessing it was trained with."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from vaerl.checkpoint import CheckpointInfo, load_model
from vaerl.errors import CheckpointError, ObservationError
from vaerl.models import VQVAE, FrameModel
from vaerl.models.blocks import to_unit
from vaerl.models.vae import reparameterize
from vaerl.preprocessing import PreprocessSpec
from vaerl.runtime import resolve_device

MODES = ("mean", "sample", "indices")


class Encoder:
    """Encodes raw env observations (any batch size) into latent vectors.

    ``mode`` chooses the latent: ``"mean"`` (VAE posterior mean, VQ-VAE quantised grid, flattened),
    ``"sample"`` (a reparameterised VAE sample) or ``"indices"`` (VQ-VAE code indices, flattened).
    """

    def __init__(self, model: FrameModel, spec: PreprocessSpec, info: CheckpointInfo, device: torch.device) -> None:
        self.model = model.eval().to(device)
        self.spec, self.info, self.device = spec, info, device
        if device.type == "cpu":
            # NHWC convolutions are 1.3-2x faster on CPU for these small conv nets
            self.model = self.model.to(memory_format=torch.channels_last)

    @property
    def kind(self) -> str:
        return self.model.kind

    def latent_dim(self, mode: str = "mean") -> int:
        self._check_mode(mode)
        if mode == "indices":
            height, width = self.model.grid_size  # type: ignore[attr-defined]
            return height * width
        return self.model.feature_dim

    def preprocess(self, observations: Any) -> np.ndarray:
        """Raw observations ``(N, ...)`` -> uint8 frames ``(N, C, H, W)`` (single frames, no stacking)."""
        return self.spec(observations)

    @torch.no_grad()
    def encode_frames(self, frames: np.ndarray | torch.Tensor, mode: str = "mean") -> torch.Tensor:
        """Encode preprocessed (and, if the spec says so, stacked) uint8 frames ``(N, C, H, W)``."""
        self._check_mode(mode)
        x = torch.as_tensor(frames)
        if x.ndim != 4 or tuple(x.shape[1:]) != self.spec.input_shape:
            raise ObservationError(f"expected encoder input (N, {', '.join(map(str, self.spec.input_shape))}), got "
                                   f"{tuple(x.shape)}; raw env observations go through Encoder.encode instead")
        if x.dtype != torch.uint8:
            raise ObservationError(f"encoder input must be uint8 frames (0..255), got {x.dtype}; preprocess raw "
                                   "observations with Encoder.preprocess first")
        x = to_unit(x.to(self.device, non_blocking=True))
        if self.device.type == "cpu":
            x = x.contiguous(memory_format=torch.channels_last)
        if mode == "indices":
            return self.model.code_indices(x).flatten(1)  # type: ignore[attr-defined]
        if mode == "sample" and self.kind == "vae":
            return reparameterize(*self.model.encode(x))  # type: ignore[attr-defined]
        return self.model.features(x)

    def encode(self, observations: Any, mode: str = "mean") -> torch.Tensor:
        """Raw env observations ``(N, ...)`` -> latents ``(N, latent_dim)``.

        Only for encoders without frame stacking; stacked encoders keep history and are used
        through the latent wrappers.
        """
        if self.spec.frame_stack != 1:
            raise ObservationError(f"this encoder expects {self.spec.frame_stack} stacked frames: use the latent "
                                   "wrappers, or stack preprocessed frames yourself and call encode_frames")
        return self.encode_frames(self.preprocess(observations), mode)

    @torch.no_grad()
    def decode(self, latents: torch.Tensor, mode: str = "mean") -> torch.Tensor:
        """Decoder means in [0, 1] for latents produced by :meth:`encode` with the same ``mode``."""
        latents = torch.as_tensor(latents, device=self.device)
        if isinstance(self.model, VQVAE):
            height, width = self.model.grid_size
            if mode == "indices":
                return self.model.decode_indices(latents.long().view(-1, height, width))
            return self.model.decode(latents.float().view(-1, self.model.config.embedding_dim, height, width))
        return self.model.decode(latents.float())  # type: ignore[attr-defined]

    def _check_mode(self, mode: str) -> None:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        if mode == "indices" and self.kind != "vqvae":
            raise ValueError(f"mode='indices' needs a VQ-VAE encoder; this one is a {self.kind}")


def load_encoder(
    path: str | Path,
    device: str | torch.device = "auto",
    *,
    env_id: str | None = None,
    spec_override: dict[str, Any] | None = None,
) -> Encoder:
    """Load a checkpoint (file or run directory) as an :class:`Encoder` in eval mode.

    ``env_id`` asserts the env the encoder was trained on; ``spec_override`` replaces fields of the
    saved preprocessing spec (for example ``{"source_shape": (96, 96, 3)}`` to feed it another env's frames).
    """
    device = resolve_device(device)
    model, info = load_model(path, device)
    if env_id is not None and info.env_id != env_id:
        raise CheckpointError(f"{path} was trained on {info.env_id!r}, not {env_id!r}: pretrain an encoder for "
                              f"{env_id} (scripts/pretrain_vae.py) or pass the matching checkpoint")
    spec = info.spec.replace(**spec_override) if spec_override else info.spec
    return Encoder(model, spec, info, device)
