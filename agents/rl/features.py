"""Stable-Baselines3 features extractors for latent runs.

:class:`EncoderFeatures` is a pretrained vaerl encoder inside the policy, frozen or fine-tuned: the env
hands the policy preprocessed uint8 frames (:class:`vaerl.wrappers.PreprocessedVecEnv`) and the
extractor encodes them with the checkpoint's encoder, so with ``trainable=True`` the encoder learns
with the policy (``encoder.finetune=true``). With ``trainable=False`` it is the same computation as
:class:`vaerl.wrappers.LatentVecEnv`, only inside the policy.

:class:`StandardizedLatents` standardises latents the env already encoded (``encoder.standardize=true``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from gymnasium import spaces
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor

from vaerl.checkpoint import load_model
from vaerl.errors import CheckpointError
from vaerl.models import build_model


def window_frames(frames_per_input: int, stack: int, stack_mode: str) -> int:
    """Frames the env must stack so the extractor can encode ``stack`` consecutive inputs."""
    latents = 2 if stack_mode == "delta" else stack
    return frames_per_input + latents - 1


class EncoderFeatures(BaseFeaturesExtractor):
    """Frames ``(N, W*C, H, W)`` in [0, 1] -> latents ``(N, stack*D)`` (or ``(N, 2D)`` for ``delta``).

    The model is rebuilt from its kind and config (plain JSON, saved with the agent) so that SB3 can
    reload the policy without the checkpoint file; :meth:`load_checkpoint` copies pretrained weights in.

    Args:
        observation_space: the stacked frames, ``W = frames_per_input + stack - 1`` frames of ``C`` channels.
        kind: ``vae`` or ``vqvae``.
        model_config: the model's keyword arguments, as stored in the checkpoint.
        frames_per_input: frames the encoder takes at once (its spec's ``frame_stack``).
        stack: consecutive latents returned (``concat``); ``delta`` returns latent and difference.
        trainable: train the encoder with the policy (``False``: frozen, gradients stop here).
    """

    def __init__(
        self,
        observation_space: spaces.Box,
        kind: str,
        model_config: dict[str, Any],
        frames_per_input: int = 1,
        stack: int = 1,
        stack_mode: str = "concat",
        trainable: bool = True,
    ) -> None:
        model = build_model(kind, **model_config)
        inputs = 2 if stack_mode == "delta" else stack
        super().__init__(observation_space, features_dim=model.feature_dim * (2 if stack_mode == "delta" else stack))
        in_channels = int(model.config.input_shape[0])  # type: ignore[attr-defined]
        self.frame_channels = in_channels // frames_per_input
        expected = self.frame_channels * window_frames(frames_per_input, stack, stack_mode)
        if observation_space.shape[0] != expected:
            raise ValueError(f"EncoderFeatures needs {expected} stacked channels for stack={stack} ({stack_mode}), "
                             f"got observations {observation_space.shape}")
        self.model, self.inputs, self.stack_mode = model, inputs, stack_mode
        self.in_channels = in_channels
        self.trainable = trainable
        self.model.requires_grad_(trainable)
        self.model.eval()

    def train(self, mode: bool = True) -> EncoderFeatures:
        # the encoder always runs as in inference (no VQ codebook updates, no dropout); gradients still flow
        super().train(mode)
        self.model.eval()
        return self

    def load_checkpoint(self, path: str | Path) -> None:
        """Copy the weights of an encoder checkpoint into this extractor."""
        model, info = load_model(path, "cpu")
        if info.kind != self.model.kind or model.config_dict() != self.model.config_dict():
            raise CheckpointError(f"{path} holds a different {info.kind} encoder than this policy was built for")
        self.model.load_state_dict(model.state_dict())

    def forward(self, observations: torch.Tensor) -> torch.Tensor:
        # (N, W*C, H, W) -> `inputs` overlapping windows of `in_channels` channels, oldest first
        windows = [observations[:, i * self.frame_channels: i * self.frame_channels + self.in_channels]
                   for i in range(self.inputs)]
        x = torch.cat(windows)  # (inputs*N, in_channels, H, W)
        if x.device.type == "cpu":
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.set_grad_enabled(self.trainable and torch.is_grad_enabled()):
            z = self.model.features(x).view(self.inputs, observations.shape[0], -1)
        if self.stack_mode == "delta":
            return torch.cat([z[1], z[1] - z[0]], dim=1)
        return torch.cat(list(z), dim=1)  # [z_{t-k+1}, ..., z_t]


def load_pretrained(policy: torch.nn.Module, path: str | Path) -> int:
    """Load ``path`` into every :class:`EncoderFeatures` of ``policy`` (actor, critic, targets); returns how many."""
    extractors = [m for m in policy.modules() if isinstance(m, EncoderFeatures)]
    for extractor in extractors:
        extractor.load_checkpoint(path)
    return len(extractors)


class StandardizedLatents(BaseFeaturesExtractor):
    """Latents ``(N, ...)`` -> ``(latent - mean) / scale``, flattened and clipped to ``[-clip, clip]``.

    A latent's numbers come in different units: Gaussian means near N(0, 1), foreground sums up to a few
    pixels' worth, part masses up to tens of pixels, centres in [-1, 1]. An MLP's first layer sees them on
    one scale after this. The statistics are fitted once, before training, on observations of random play
    (:meth:`fit`, as RND initialises its observation normalisation) and then stay fixed, so a stored
    rollout means the same thing at every PPO epoch. They are buffers: checkpoints and ``agent.zip`` carry
    them, and evaluation, video and resumed runs see what training saw. A number that hardly varied in
    random play is divided by ``floor`` instead of its tiny spread, and clipping bounds what random play
    never showed (late-game states).
    """

    def __init__(self, observation_space: spaces.Box, floor: float = 0.1, clip: float = 5.0) -> None:
        size = int(np.prod(observation_space.shape))
        super().__init__(observation_space, features_dim=size)
        self.floor, self.clip = float(floor), float(clip)
        self.register_buffer("mean", torch.zeros(size))
        self.register_buffer("scale", torch.ones(size))

    @torch.no_grad()
    def fit(self, observations: np.ndarray | torch.Tensor) -> None:
        """Set mean and scale from ``(N, ...)`` observations (N >= 2)."""
        x = torch.as_tensor(observations, dtype=torch.float32).flatten(1)
        if x.shape[0] < 2 or x.shape[1] != self.mean.numel():
            raise ValueError(f"StandardizedLatents.fit needs (N >= 2, {self.mean.numel()}) observations, "
                             f"got {tuple(x.shape)}")
        self.mean.copy_(x.mean(0))
        self.scale.copy_(x.std(0).clamp(min=self.floor))

    def forward(self, observations: torch.Tensor) -> torch.Tensor:
        return ((observations.flatten(1) - self.mean) / self.scale).clamp(-self.clip, self.clip)
