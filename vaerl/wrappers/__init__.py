"""Latent wrappers: give an RL agent the encoder's latents instead of pixels.

``vaerl.wrap(env, "encoder.safetensors")`` picks the right wrapper for a gymnasium ``Env``, a
gymnasium ``VectorEnv`` or a Stable-Baselines3 ``VecEnv``. All of them apply the preprocessing
saved in the checkpoint and encode each step's batch in one forward pass on the encoder's device.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import gymnasium as gym
import torch

from vaerl.encoder import Encoder, load_encoder
from vaerl.wrappers.core import STACK_MODES, FramePipeline, LatentPipeline, RollingWindow
from vaerl.wrappers.env import LatentObservation
from vaerl.wrappers.vector import LatentVectorEnv


def as_encoder(
    encoder: Encoder | str | Path,
    *,
    device: str | torch.device = "auto",
    preprocess: dict[str, Any] | None = None,
) -> Encoder:
    """Load ``encoder`` if it is a path; apply a preprocessing override to a loaded one."""
    if not isinstance(encoder, Encoder):
        return load_encoder(encoder, device, spec_override=preprocess)
    if preprocess:
        return Encoder(encoder.model, encoder.spec.replace(**preprocess), encoder.info, encoder.device)
    return encoder


def wrap(
    env: Any,
    encoder: Encoder | str | Path,
    *,
    mode: str = "mean",
    stack: int = 1,
    stack_mode: str = "concat",
    preprocess: dict[str, Any] | None = None,
    device: str | torch.device = "auto",
) -> Any:
    """Wrap ``env`` so that it returns latents of ``encoder`` (a checkpoint path or a loaded Encoder).

    Args:
        env: a gymnasium ``Env`` or ``VectorEnv``, or an SB3 ``VecEnv``, whose observations are images
            (HWC or CHW, gray or RGB, uint8 or float in [0, 1], any size) or a ``Dict`` holding one.
        mode: ``"mean"``, ``"sample"`` (VAE) or ``"indices"`` (VQ-VAE code indices, ``MultiDiscrete``).
        stack: number of consecutive latents in each observation (``stack_mode="concat"``).
        stack_mode: ``"concat"`` or ``"delta"`` (latent plus its change since the last step).
        preprocess: overrides of the saved preprocessing spec, e.g. ``{"source_shape": (3, 96, 96),
            "layout": "chw", "image_key": "pixels"}`` for frames the encoder was not trained on.
        device: where to load the encoder when ``encoder`` is a path (``auto``: the GPU if there is one).
    """
    encoder = as_encoder(encoder, device=device, preprocess=preprocess)
    options = {"mode": mode, "stack": stack, "stack_mode": stack_mode}
    sb3 = sys.modules.get("stable_baselines3.common.vec_env")  # an SB3 VecEnv implies SB3 is imported
    if sb3 is not None and isinstance(env, sb3.VecEnv):
        from vaerl.wrappers.sb3 import LatentVecEnv

        return LatentVecEnv(env, encoder, **options)
    if isinstance(env, gym.vector.VectorEnv):
        return LatentVectorEnv(env, encoder, **options)
    if isinstance(env, gym.Env):
        return LatentObservation(env, encoder, **options)
    raise TypeError(f"cannot wrap {type(env).__name__}: expected a gymnasium Env or VectorEnv, or an SB3 VecEnv")


def __getattr__(name: str) -> Any:
    # the SB3 wrappers import stable_baselines3, which `import vaerl` should not pay for
    if name in ("LatentVecEnv", "PreprocessedVecEnv"):
        from vaerl.wrappers import sb3

        return getattr(sb3, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["STACK_MODES", "FramePipeline", "LatentObservation", "LatentPipeline", "LatentVecEnv",
           "LatentVectorEnv", "PreprocessedVecEnv", "RollingWindow", "as_encoder", "wrap"]
