"""Frame models (one family per file) and the registry that checkpoints use to rebuild them.

A new family is one module with a :class:`FrameModel` subclass (the latent contract in
:mod:`vaerl.models.base`) plus its entry in :data:`MODEL_REGISTRY`.
"""

from __future__ import annotations

from typing import Any

from vaerl.config import from_dict
from vaerl.errors import CheckpointError, ConfigError
from vaerl.models.base import LATENT_MODES, FrameModel, LatentAxes, LossOutput
from vaerl.models.pixelcnn import PixelCNNConfig, PixelCNNPrior
from vaerl.models.vae import VAE, VAEConfig
from vaerl.models.vqvae import VQVAE, VectorQuantizer, VQVAEConfig

MODEL_REGISTRY: dict[str, type[FrameModel]] = {VAE.kind: VAE, VQVAE.kind: VQVAE}


def build_model(kind: str, **kwargs: Any) -> FrameModel:
    """Build a frame model from its kind (``vae``/``vqvae``) and config keyword arguments."""
    if kind not in MODEL_REGISTRY:
        raise ConfigError(f"unknown model kind {kind!r}: choose one of {sorted(MODEL_REGISTRY)}")
    cls = MODEL_REGISTRY[kind]
    return cls(from_dict(cls.config_class, kwargs, where="model"))


def model_class(kind: str) -> type[FrameModel]:
    if kind not in MODEL_REGISTRY:
        raise CheckpointError(f"checkpoint holds a model of kind {kind!r}, which this vaerl does not know "
                              f"(known: {sorted(MODEL_REGISTRY)}); upgrade vaerl or retrain")
    return MODEL_REGISTRY[kind]


__all__ = [
    "LATENT_MODES",
    "MODEL_REGISTRY",
    "VAE",
    "VQVAE",
    "FrameModel",
    "LatentAxes",
    "LossOutput",
    "PixelCNNConfig",
    "PixelCNNPrior",
    "VAEConfig",
    "VQVAEConfig",
    "VectorQuantizer",
    "build_model",
    "model_class",
]
