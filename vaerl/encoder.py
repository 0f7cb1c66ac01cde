"""A pretrained encoder ready for inference: model in eval mode + the preprocessing it was trained with."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from gymnasium import spaces

from vaerl.checkpoint import CheckpointInfo, load_model
from vaerl.data.loader import iterate_in_order
from vaerl.errors import CheckpointError, ObservationError
from vaerl.models import LATENT_MODES, FrameModel
from vaerl.models.blocks import to_unit
from vaerl.preprocessing import PreprocessSpec
from vaerl.runtime import resolve_device

if TYPE_CHECKING:
    from vaerl.data.dataset import FrameDataset
    from vaerl.envs.make import EnvConfig

MODES = tuple(LATENT_MODES)

FRAME_SETTINGS = ("id", "frame_skip", "screen_size", "grayscale", "size", "layout", "image_key", "frame_stack")
"""Env settings that change what frames look like: an encoder fits only the ones it was pretrained under.
(Constructor kwargs are opaque: the wrappers' observation-space check catches those that change frame shapes.)"""


class Encoder:
    """Encodes raw env observations (any batch size) into latent vectors.

    ``mode`` chooses the latent (see :data:`vaerl.models.LATENT_MODES`): ``"mean"`` (VAE posterior
    mean, VQ-VAE quantised grid, flattened), ``"sample"`` (a reparameterised VAE sample) or
    ``"indices"`` (VQ-VAE code indices, flattened). Everything model-specific comes from the
    model's latent contract (:class:`vaerl.models.FrameModel`).
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
        """Length of one observation's latent in ``mode``."""
        return self.model.latent_dim(mode)

    def latent_space(self, mode: str = "mean") -> spaces.Space:
        """The gymnasium space of one observation's latent in ``mode``."""
        return self.model.latent_space(mode)

    def describe_latent(self) -> str:
        """``32-d`` for a VAE, ``10x10x8 grid`` for a VQ-VAE (positions x code-vector size)."""
        return self.model.describe_latent()

    def preprocess(self, observations: Any) -> np.ndarray:
        """Raw observations ``(N, ...)`` -> uint8 frames ``(N, C, H, W)`` (single frames, no stacking)."""
        return self.spec(observations)

    @torch.no_grad()
    def encode_frames(self, frames: np.ndarray | torch.Tensor, mode: str = "mean", *,
                      generator: torch.Generator | None = None) -> torch.Tensor:
        """Encode preprocessed (and, if the spec says so, stacked) uint8 frames ``(N, C, H, W)``.

        ``generator`` (on the encoder's device) seeds ``mode="sample"``; without one it draws from torch's global RNG.
        """
        self.model.check_mode(mode)
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
        return self.model.encode_latent(x, mode, generator=generator)

    def encode(self, observations: Any, mode: str = "mean", *,
               generator: torch.Generator | None = None) -> torch.Tensor:
        """Raw env observations ``(N, ...)`` -> latents ``(N, latent_dim)``.

        Only for encoders without frame stacking; stacked encoders keep history and are used
        through the latent wrappers.
        """
        if self.spec.frame_stack != 1:
            raise ObservationError(f"this encoder expects {self.spec.frame_stack} stacked frames: use the latent "
                                   "wrappers, or stack preprocessed frames yourself and call encode_frames")
        return self.encode_frames(self.preprocess(observations), mode, generator=generator)

    @torch.no_grad()
    def decode(self, latents: torch.Tensor, mode: str = "mean") -> torch.Tensor:
        """Decoder means in [0, 1] for latents produced by :meth:`encode` with the same ``mode``."""
        return self.model.decode_latent(torch.as_tensor(latents, device=self.device), mode)

    @torch.no_grad()
    def encode_dataset(self, dataset: FrameDataset, indices: np.ndarray, mode: str = "mean",
                       batch_size: int = 256) -> torch.Tensor:
        """Latents of frames ``indices`` of ``dataset`` (stacked as this encoder expects), on the CPU.

        Continuous latents come back as float32, code indices as int64.
        """
        out = [self.encode_frames(batch, mode).cpu()
               for batch in iterate_in_order(dataset, np.asarray(indices), batch_size, self.spec.frame_stack)]
        if not out:
            return torch.empty(0, self.latent_dim(mode))
        latents = torch.cat(out)
        return latents.long() if isinstance(self.latent_space(mode), spaces.MultiDiscrete) else latents.float()


def env_differences(trained: Mapping[str, Any], env: EnvConfig | Mapping[str, Any] | str,
                    settings: Sequence[str] = FRAME_SETTINGS) -> list[str]:
    """How ``env`` differs from the env an encoder was pretrained on, in the frame ``settings``.

    ``trained`` is the env config saved in the checkpoint (:attr:`CheckpointInfo.env`). ``env`` is an
    :class:`~vaerl.envs.EnvConfig`, its dict, or a bare env id (which compares the id alone). An
    empty list means the encoder fits.
    """
    if isinstance(env, str):
        current, settings = {"id": env}, ("id",)
    else:
        current = env.to_dict() if hasattr(env, "to_dict") else dict(env)
    # compare as JSON would store them, so a tuple here equals the list a checkpoint holds
    current, saved = json.loads(json.dumps(current, default=str)), json.loads(json.dumps(dict(trained), default=str))
    return [f"env.{key}={current.get(key)!r} here, {saved[key]!r} in pretraining" for key in settings
            if key in saved and saved[key] != current.get(key)]


def check_encoder_env(info: CheckpointInfo, env: EnvConfig | Mapping[str, Any] | str, *, where: str, fix: str,
                      target: str = "this env", settings: Sequence[str] = FRAME_SETTINGS,
                      error: type[Exception] = CheckpointError) -> None:
    """Raise ``error`` listing :func:`env_differences` when the encoder described by ``info`` does not fit ``env``.

    ``where`` names the encoder in the message, ``fix`` says what to do; ``settings=("id",)`` checks
    only that it is the same game (for callers that run on the checkpoint's own env settings anyway).
    """
    differences = env_differences(info.env, env, settings)
    if differences:
        raise error(f"{where} was pretrained on other frames than {target}: {'; '.join(differences)}. {fix}")


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
    if env_id is not None:
        check_encoder_env(info, env_id, where=str(path), target=env_id,
                          fix=f"Pretrain an encoder for {env_id} (scripts/pretrain_vae.py) or pass the matching "
                              "checkpoint")
    spec = info.spec.replace(**spec_override) if spec_override else info.spec
    return Encoder(model, spec, info, device)
