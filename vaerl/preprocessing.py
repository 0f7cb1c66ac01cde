"""The preprocessing spec: how raw env observations become encoder input.

The spec is saved inside every checkpoint and every dataset, so data collection, training and the
latent wrappers all apply exactly the same transform. Encoder input is always ``uint8`` in
``(N, C, H, W)`` layout with ``C = channels_per_frame * frame_stack``; models scale to [0, 1].
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
from gymnasium import spaces

from vaerl.errors import ObservationError

LAYOUTS = ("hw", "hwc", "chw")
_GRAY_WEIGHTS = np.array([0.299, 0.587, 0.114], dtype=np.float32)  # ITU-R 601, as cv2.COLOR_RGB2GRAY


@dataclass(frozen=True)
class PreprocessSpec:
    """What the encoder expects from one raw env observation, and how to get there.

    Attributes:
        source_shape: shape of one raw image as the env emits it (after picking ``image_key``).
        source_dtype: ``"uint8"`` (0..255) or ``"float32"`` (values in [0, 1]).
        layout: axis order of the raw image: ``"hw"`` (gray), ``"hwc"`` or ``"chw"``.
        size: ``(height, width)`` the encoder sees; frames are resized with area interpolation.
        grayscale: convert RGB frames to one gray channel.
        frame_stack: number of consecutive frames stacked along channels (1 = single frame).
        image_key: key of the image in a ``Dict`` observation, ``None`` for a plain ``Box``.
    """

    source_shape: tuple[int, ...]
    source_dtype: str = "uint8"
    layout: str = "hwc"
    size: tuple[int, int] = (84, 84)
    grayscale: bool = True
    frame_stack: int = 1
    image_key: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "source_shape", tuple(int(s) for s in self.source_shape))
        object.__setattr__(self, "size", tuple(int(s) for s in self.size))
        if self.layout not in LAYOUTS:
            raise ObservationError(f"layout must be one of {LAYOUTS}, got {self.layout!r}")
        if len(self.source_shape) != len(self.layout):
            raise ObservationError(
                f"source_shape {self.source_shape} does not have the {len(self.layout)} axes of layout {self.layout!r}"
            )
        if self.source_dtype not in ("uint8", "float32"):
            raise ObservationError(f"source_dtype must be 'uint8' or 'float32', got {self.source_dtype!r}")
        if self.frame_stack < 1:
            raise ObservationError(f"frame_stack must be >= 1, got {self.frame_stack}")
        if self.source_channels not in (1, 3, 4):
            raise ObservationError(
                f"images with {self.source_channels} channels are not supported (expected 1 gray, 3 RGB or 4 RGBA)"
            )

    # ----------------------------------------------------------------- derived shapes
    @property
    def source_channels(self) -> int:
        if self.layout == "hw":
            return 1
        return self.source_shape[-1] if self.layout == "hwc" else self.source_shape[0]

    @property
    def channels_per_frame(self) -> int:
        return 1 if self.grayscale or self.source_channels == 1 else 3

    @property
    def channels(self) -> int:
        """Channels of the encoder input (all stacked frames)."""
        return self.channels_per_frame * self.frame_stack

    @property
    def frame_shape(self) -> tuple[int, int, int]:
        """Shape of one preprocessed frame, ``(C, H, W)`` before stacking; datasets store these."""
        return (self.channels_per_frame, *self.size)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """Shape of one encoder input, ``(C * frame_stack, H, W)``."""
        return (self.channels, *self.size)

    # ----------------------------------------------------------------- construction
    @classmethod
    def from_space(
        cls,
        space: spaces.Space,
        *,
        size: tuple[int, int] | None = None,
        grayscale: bool = True,
        frame_stack: int = 1,
        image_key: str | None = None,
        layout: str | None = None,
    ) -> PreprocessSpec:
        """Infer the spec for an env's observation space (``Box`` image or ``Dict`` with an image)."""
        box = image_space(space, image_key)
        shape = tuple(box.shape)
        layout = layout or infer_layout(shape)
        dtype = "uint8" if box.dtype == np.uint8 else "float32"
        if size is None:
            size = (shape[0], shape[1]) if layout != "chw" else (shape[1], shape[2])
        return cls(shape, dtype, layout, tuple(size), grayscale, frame_stack, image_key)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PreprocessSpec:
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    def replace(self, **changes: Any) -> PreprocessSpec:
        return dataclasses.replace(self, **changes)

    # ----------------------------------------------------------------- checking
    def mismatches(self, space: spaces.Space) -> list[str]:
        """Ways in which ``space`` differs from the images this spec was built for (empty: compatible)."""
        try:
            box = image_space(space, self.image_key)
        except ObservationError as exc:
            return [str(exc)]
        problems = []
        if tuple(box.shape) != self.source_shape:
            problems.append(
                f"image shape {tuple(box.shape)} != {self.source_shape} (layout {self.layout!r}) the encoder was "
                f"trained on; frames are resized to {self.size} either way, so if the content matches pass a "
                f"preprocessing override such as source_shape={tuple(box.shape)}"
                + (f", layout={infer_layout(tuple(box.shape))!r}" if _layout_or_none(tuple(box.shape)) else "")
            )
        dtype = "uint8" if box.dtype == np.uint8 else "float32"
        if dtype != self.source_dtype:
            problems.append(f"image dtype {box.dtype} != {self.source_dtype} (override: source_dtype={dtype!r})")
        return problems

    def check_space(self, space: spaces.Space) -> None:
        """Raise :class:`ObservationError` listing every difference between ``space`` and this spec."""
        problems = self.mismatches(space)
        if problems:
            raise ObservationError("observations do not match the encoder's preprocessing: " + "; ".join(problems))

    # ----------------------------------------------------------------- the transform
    def __call__(self, observations: Any) -> np.ndarray:
        """Preprocess a batch of raw observations into uint8 frames of shape ``(N, *frame_shape)``.

        ``observations`` is an array of shape ``(N, *source_shape)`` or a dict holding one under
        ``image_key``. Frame stacking is stateful and is done by the caller (dataset or wrapper).
        """
        images = observations[self.image_key] if self.image_key is not None else observations
        images = np.asarray(images)
        if images.shape[1:] != self.source_shape:
            raise ObservationError(
                f"expected a batch of images shaped (N, {', '.join(map(str, self.source_shape))}), got {images.shape}; "
                "pass a batch (add a leading axis for one frame) or fix the preprocessing spec"
            )
        images = _to_uint8(images)
        images = _to_nhwc(images, self.layout)
        if self.grayscale and images.shape[-1] >= 3:
            images = _rgb_to_gray(images[..., :3])
        elif images.shape[-1] == 4:
            images = images[..., :3]
        if images.shape[1:3] != self.size:
            images = _resize(images, self.size)
        return np.ascontiguousarray(images.transpose(0, 3, 1, 2))


def image_space(space: spaces.Space, image_key: str | None) -> spaces.Box:
    """Return the image ``Box`` of ``space``, raising a helpful error when there is none."""
    if isinstance(space, spaces.Dict):
        if image_key is None:
            boxes = [k for k, s in space.spaces.items() if isinstance(s, spaces.Box) and len(s.shape) in (2, 3)]
            raise ObservationError(
                f"the observation space is a Dict with keys {list(space.spaces)}: name the image with image_key "
                f"(candidates: {boxes})"
            )
        if image_key not in space.spaces:
            raise ObservationError(f"image_key {image_key!r} is not in the observation Dict keys {list(space.spaces)}")
        space = space.spaces[image_key]
    elif image_key is not None:
        raise ObservationError(f"image_key={image_key!r} was given but the observation space is not a Dict: {space}")
    if not isinstance(space, spaces.Box) or len(space.shape) not in (2, 3):
        raise ObservationError(
            f"observations are not images: {space}. vaerl encoders need a Box of shape (H, W), (H, W, C) or (C, H, W), "
            "or a Dict holding one (set image_key)"
        )
    if space.dtype != np.uint8 and not np.issubdtype(space.dtype, np.floating):
        raise ObservationError(f"image dtype {space.dtype} is not supported: use uint8 (0..255) or float in [0, 1]")
    return space


def infer_layout(shape: tuple[int, ...]) -> str:
    layout = _layout_or_none(shape)
    if layout is None:
        raise ObservationError(
            f"cannot tell whether image shape {shape} is HWC or CHW: pass layout='hwc' or layout='chw'"
        )
    return layout


def _layout_or_none(shape: tuple[int, ...]) -> str | None:
    if len(shape) == 2:
        return "hw"
    if len(shape) != 3:
        return None
    last, first = shape[-1] in (1, 3, 4), shape[0] in (1, 3, 4)
    if last and not first:
        return "hwc"
    if first and not last:
        return "chw"
    return None


def _to_uint8(images: np.ndarray) -> np.ndarray:
    if images.dtype == np.uint8:
        return images
    return np.clip(np.rint(images.astype(np.float32) * 255.0), 0, 255).astype(np.uint8)


def _to_nhwc(images: np.ndarray, layout: str) -> np.ndarray:
    if layout == "hw":
        return images[..., None]
    if layout == "chw":
        return images.transpose(0, 2, 3, 1)
    return images


def _rgb_to_gray(images: np.ndarray) -> np.ndarray:
    gray = images.astype(np.float32) @ _GRAY_WEIGHTS
    return np.clip(np.rint(gray), 0, 255).astype(np.uint8)[..., None]


def _resize(images: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    height, width = size
    out = np.empty((images.shape[0], height, width, images.shape[-1]), dtype=np.uint8)
    for i, image in enumerate(images):
        resized = cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA)
        out[i] = resized.reshape(height, width, -1)
    return out
