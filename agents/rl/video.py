"""A short GIF of the agent playing: the frame it sees, and beside it the encoder's reconstruction of that frame."""

from __future__ import annotations

from pathlib import Path

import imageio.v3 as iio
import numpy as np
import torch
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.vec_env import VecEnv

from agents.rl.envs import Observations
from agents.rl.features import EncoderFeatures
from vaerl.io import atomic_path


def record_play(
    model: BaseAlgorithm,
    env: VecEnv,
    observations: Observations,
    path: Path,
    *,
    steps: int,
    fps: int = 30,
    scale: int = 3,
    mode: str = "mean",
) -> dict[str, float]:
    """Play ``steps`` agent steps in ``env`` (one env) and write ``[frame | reconstruction]`` frames to ``path``."""
    if observations.kind == "raw":
        return {}
    obs = env.reset()
    images, total = [], 0.0
    for _ in range(steps):
        frame, recon = _view(model, env, observations, obs, mode)
        images.append(_compose(frame, recon, scale))
        action, _ = model.predict(obs, deterministic=True)
        obs, rewards, _, _ = env.step(action)
        total += float(rewards[0])
    with atomic_path(path) as tmp:
        iio.imwrite(tmp, np.stack(images), extension=".gif", duration=1000 / fps, loop=0)
    return {"steps": steps, "reward": total}


def _view(
    model: BaseAlgorithm, env: VecEnv, observations: Observations, obs: np.ndarray, mode: str
) -> tuple[np.ndarray, np.ndarray | None]:
    """The current frame ``(C, H, W)`` uint8 of env 0 and the reconstruction of its latent, in [0, 1]."""
    encoder = observations.encoder
    if observations.kind == "pixels":
        return obs[0, -1:], None
    assert encoder is not None
    channels = encoder.spec.channels_per_frame
    if observations.kind == "latent":
        pipeline = env.pipeline  # type: ignore[attr-defined]
        frame, z = pipeline.frames.data[0, -1], pipeline.latents.data[0, -1:]
    else:  # fine-tuned: the policy's own encoder gives the latent, the checkpoint's decoder draws it
        extractor = next(m for m in model.policy.modules() if isinstance(m, EncoderFeatures))
        frame = obs[0, -channels:]
        window = torch.as_tensor(obs[:, -extractor.in_channels:], device=model.device).float() / 255.0
        with torch.no_grad():
            z = extractor.model.features(window)
        mode = "mean"
    recon = encoder.decode(torch.as_tensor(z, device=encoder.device), mode)[0, -channels:]
    return frame, recon.float().cpu().numpy()


def _compose(frame: np.ndarray, recon: np.ndarray | None, scale: int) -> np.ndarray:
    panels = [_rgb(frame)]
    if recon is not None:
        panels += [np.full((frame.shape[1], 2, 3), 255, np.uint8), _rgb(np.clip(recon * 255 + 0.5, 0, 255))]
    image = np.concatenate(panels, axis=1)
    return image.repeat(scale, axis=0).repeat(scale, axis=1)


def _rgb(chw: np.ndarray) -> np.ndarray:
    hwc = np.asarray(chw).astype(np.uint8).transpose(1, 2, 0)
    return np.repeat(hwc, 3, axis=2) if hwc.shape[2] == 1 else hwc[..., :3]
