"""The batched engine behind every latent wrapper: preprocess, stack, encode, stack latents.

Wrappers for single envs, SB3 ``VecEnv`` and gymnasium ``VectorEnv`` differ only in how they
learn which envs started a new episode and where terminal observations hide; they all hand a
batch of raw observations to a :class:`FramePipeline` / :class:`LatentPipeline`, which keeps the
per-env history and runs one encoder forward pass per call.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from gymnasium import spaces

from vaerl.encoder import Encoder
from vaerl.errors import ObservationError
from vaerl.preprocessing import PreprocessSpec, image_space, infer_layout

STACK_MODES = ("concat", "delta")


class RollingWindow:
    """The last ``length`` items of each of ``num_envs`` streams, oldest first.

    A stream that starts a new episode is filled with copies of its first item, so a window is
    always full (the convention of SB3's and gymnasium's frame stacking).
    """

    def __init__(self, num_envs: int, length: int, item_shape: tuple[int, ...], dtype: Any) -> None:
        self.length = length
        self.data = np.zeros((num_envs, length, *item_shape), dtype=dtype)

    def push(self, items: np.ndarray, indices: np.ndarray, starts: np.ndarray) -> None:
        """Append ``items[j]`` to stream ``indices[j]``, restarting the streams where ``starts[j]``."""
        if self.length > 1:
            self.data[indices, :-1] = self.data[indices, 1:]
        self.data[indices, -1] = items
        restart = indices[starts]
        if restart.size:
            self.data[restart] = items[starts][:, None]

    def continued(self, indices: np.ndarray, items: np.ndarray) -> np.ndarray:
        """The windows streams ``indices`` would have after appending ``items`` (no state change)."""
        return np.concatenate([self.data[indices, 1:], items[:, None]], axis=1)


class FramePipeline:
    """Raw observations -> preprocessed uint8 frames, the last ``frame_stack`` stacked along channels.

    Output per env: ``(frame_stack * C, H, W)`` uint8, the input an encoder trained with
    ``spec.frame_stack == frame_stack`` expects, or a stack for a pixel CNN policy.
    """

    def __init__(self, spec: PreprocessSpec, num_envs: int, frame_stack: int | None = None) -> None:
        self.spec = spec
        self.num_envs = num_envs
        self.frame_stack = spec.frame_stack if frame_stack is None else int(frame_stack)
        if self.frame_stack < 1:
            raise ValueError(f"frame_stack must be >= 1, got {self.frame_stack}")
        self.frames = RollingWindow(num_envs, self.frame_stack, spec.frame_shape, np.uint8)
        self._all = np.arange(num_envs)

    @property
    def single_observation_space(self) -> spaces.Space:
        channels, height, width = self.spec.frame_shape
        return spaces.Box(0, 255, (self.frame_stack * channels, height, width), np.uint8)

    def check_space(self, space: spaces.Space) -> None:
        """Raise an :class:`ObservationError` naming every difference and the override that fixes it."""
        problems = self.spec.mismatches(space)
        if problems:
            raise ObservationError(
                "the env's observations do not match the preprocessing the encoder was trained with: "
                + "; ".join(problems) + "." + suggest_override(self.spec, space)
            )

    def seed(self, seed: int | None) -> None:
        """Seed the pipeline's own randomness (none here; see :class:`LatentPipeline`)."""

    def images(self, observations: Any) -> np.ndarray:
        """Preprocess a batch of raw observations (array, or dict holding ``spec.image_key``)."""
        return self.spec(observations)

    def step(
        self,
        observations: Any,
        starts: np.ndarray,
        indices: np.ndarray | None = None,
        finals: Any = None,
        final_indices: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """Advance the envs ``indices`` (default: all) by one observation each.

        ``starts[j]`` marks an observation that begins a new episode. ``finals`` are the last
        observations of episodes that ended this step (SB3's ``terminal_observation``, gymnasium's
        ``final_obs``) for the envs ``final_indices``; they are processed as the continuation of
        the old history, before it restarts. Returns new arrays: outputs for ``indices`` and for the finals.
        """
        indices = self._all if indices is None else np.asarray(indices)
        starts = np.asarray(starts, dtype=bool)
        frames = self.images(observations)
        final_windows = None
        if finals is not None and len(final_indices):
            final_windows = self.frames.continued(np.asarray(final_indices), self.images(finals))
        self.frames.push(frames, indices, starts)
        inputs = _channels(self.frames.data[indices])
        final_inputs = None if final_windows is None else _channels(final_windows)
        return self._output(inputs, final_inputs, indices, starts, final_indices)

    def _output(
        self, inputs: np.ndarray, final_inputs: np.ndarray | None, indices: np.ndarray, starts: np.ndarray,
        final_indices: np.ndarray | None,
    ) -> tuple[np.ndarray, np.ndarray | None]:
        return inputs, final_inputs


class LatentPipeline(FramePipeline):
    """Raw observations -> encoder latents, optionally the last ``stack`` latents or latent + difference.

    Args:
        encoder: a loaded :class:`~vaerl.Encoder`; its spec decides preprocessing and frame stacking.
        num_envs: number of parallel envs whose histories are kept.
        mode: ``"mean"`` (VAE mean / VQ-VAE quantised grid), ``"sample"`` (VAE sample z) or
            ``"indices"`` (VQ-VAE code indices, a ``MultiDiscrete`` space).
        stack: how many latents the policy sees (``concat`` mode); 1 = the current latent only.
        stack_mode: ``"concat"`` (``[z_{t-k+1}, ..., z_t]``) or ``"delta"`` (``[z_t, z_t - z_{t-1}]``).
    """

    def __init__(
        self,
        encoder: Encoder,
        num_envs: int,
        mode: str = "mean",
        stack: int = 1,
        stack_mode: str = "concat",
    ) -> None:
        super().__init__(encoder.spec, num_envs)
        if stack_mode not in STACK_MODES:
            raise ValueError(f"stack_mode must be one of {STACK_MODES}, got {stack_mode!r}")
        if stack < 1:
            raise ValueError(f"stack must be >= 1, got {stack}")
        if stack_mode == "delta" and mode == "indices":
            raise ValueError("stack_mode='delta' needs continuous latents; use mode='mean' or stack_mode='concat'")
        self.encoder, self.mode, self.stack_mode = encoder, mode, stack_mode
        self.stack = 2 if stack_mode == "delta" else int(stack)
        self.latent_space = encoder.latent_space(mode)  # also validates mode against the model's latent modes
        self.latent_dim = encoder.latent_dim(mode)
        check_input_shape(encoder)
        self.latents = RollingWindow(num_envs, self.stack, (self.latent_dim,), self.latent_space.dtype)
        # the noise of mode="sample", seeded by seed() so seeded resets give identical latents
        self.generator = torch.Generator(device=encoder.device) if mode == "sample" else None

    @property
    def single_observation_space(self) -> spaces.Space:
        """The latent space of one frame, repeated for each latent the policy sees."""
        return repeat_space(self.latent_space, self.stack)

    def seed(self, seed: int | Sequence[int | None] | None) -> None:
        """Seed the noise of ``mode="sample"`` so seeded resets give identical latents (a vector env's list of
        seeds, one per env, seeds it by its first)."""
        if not isinstance(seed, (int, np.integer)) and seed is not None:
            seed = next((s for s in seed if s is not None), None)
        if self.generator is not None and seed is not None:
            self.generator.manual_seed(int(seed))

    def _output(
        self, inputs: np.ndarray, final_inputs: np.ndarray | None, indices: np.ndarray, starts: np.ndarray,
        final_indices: np.ndarray | None,
    ) -> tuple[np.ndarray, np.ndarray | None]:
        # one forward pass for the current observations and the terminal ones together
        batch = inputs if final_inputs is None else np.concatenate([inputs, final_inputs])
        z = self._encode(batch)
        z_now, z_final = z[: len(inputs)], z[len(inputs):]
        final_out = None
        if final_inputs is not None:
            final_out = self._stacked(self.latents.continued(np.asarray(final_indices), z_final))
        self.latents.push(z_now, indices, starts)
        return self._stacked(self.latents.data[indices]), final_out

    def _encode(self, frames: np.ndarray) -> np.ndarray:
        return self.encoder.encode_frames(frames, self.mode, generator=self.generator).cpu().numpy()

    def _stacked(self, windows: np.ndarray) -> np.ndarray:
        """(n, k, D) latent windows -> the policy's (n, k*D) or (n, 2D) vectors (a new array)."""
        if self.stack_mode == "delta":
            return np.concatenate([windows[:, -1], windows[:, -1] - windows[:, -2]], axis=1)
        return windows.reshape(len(windows), -1).copy()


def _channels(windows: np.ndarray) -> np.ndarray:
    """(n, k, C, H, W) frame windows -> (n, k*C, H, W) encoder input (oldest frame first)."""
    return windows.reshape(len(windows), -1, *windows.shape[3:])


def check_input_shape(encoder: Encoder) -> None:
    """Fail early when the (possibly overridden) spec cannot produce what the model was built for."""
    expected = encoder.model.input_shape
    if encoder.spec.input_shape != expected:
        hint = ""
        if encoder.spec.channels_per_frame * encoder.spec.frame_stack != expected[0]:
            gray = expected[0] // encoder.spec.frame_stack == 1
            hint = f" (the encoder wants {'gray' if gray else 'RGB'} frames: preprocess={{'grayscale': {gray}}})"
        elif encoder.spec.size != expected[1:]:
            hint = f" (preprocess={{'size': {expected[1:]}}})"
        raise ObservationError(f"the preprocessing gives encoder input {encoder.spec.input_shape} but the encoder was "
                               f"built for {expected}{hint}")


def repeat_space(space: spaces.Space, copies: int) -> spaces.Space:
    """``copies`` latents of ``space`` side by side (a flat ``Box`` or ``MultiDiscrete``)."""
    if isinstance(space, spaces.MultiDiscrete):
        return spaces.MultiDiscrete(np.tile(space.nvec, copies))
    if isinstance(space, spaces.Box):
        return spaces.Box(np.tile(space.low, copies), np.tile(space.high, copies), dtype=space.dtype)
    raise TypeError(f"cannot stack latents of {space}: expected a flat Box or MultiDiscrete")


def suggest_override(spec: PreprocessSpec, space: spaces.Space) -> str:
    """A ready-to-paste ``preprocess={...}`` that makes ``spec`` accept ``space``, or '' if none exists."""
    changes: dict[str, Any] = {}
    key = spec.image_key
    if isinstance(space, spaces.Dict) and (key is None or key not in space.spaces):
        images = [k for k, s in space.spaces.items() if isinstance(s, spaces.Box) and len(s.shape) in (2, 3)]
        if len(images) != 1:
            return f" Name the image with preprocess={{'image_key': ...}} (candidates: {images})."
        key = changes["image_key"] = images[0]
    elif not isinstance(space, spaces.Dict) and key is not None:
        key = changes["image_key"] = None
    try:
        box = image_space(space, key)
    except ObservationError:
        return ""
    shape = tuple(int(s) for s in box.shape)
    if shape != spec.source_shape:
        changes["source_shape"] = shape
        try:
            changes["layout"] = infer_layout(shape)
        except ObservationError:
            changes["layout"] = "'hwc' or 'chw'"
    dtype = "uint8" if box.dtype == np.uint8 else "float32"
    if dtype != spec.source_dtype:
        changes["source_dtype"] = dtype
    if not changes:
        return ""
    return (f" If these are frames of the same kind of scene, pass preprocess={changes} (to vaerl.wrap, or "
            f"encoder.preprocess in configs); frames are then resized to {spec.size} and "
            f"{'converted to gray' if spec.grayscale else 'kept in colour'} as the encoder expects.")
