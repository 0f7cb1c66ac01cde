"""A tiny image env that needs no emulator: a ball bounces, a paddle follows the actions.

It exists so tests and examples run in milliseconds. Its observation can be shaped like any
image env vaerl supports (HWC or CHW, gray or RGB, uint8 or float, optionally inside a ``Dict``),
and it exposes a 128-byte ``get_ram()`` like the ALE so probing code can be tested on it.
"""

from __future__ import annotations

from typing import Any, ClassVar

import gymnasium as gym
import numpy as np
from gymnasium import spaces

# RAM addresses of the annotated variables (see vaerl/evaluation annotations for the ALE games).
RAM_BALL_X, RAM_BALL_Y, RAM_PADDLE_X = 0, 1, 2


class FakeFrameEnv(gym.Env):
    """Ball-and-paddle frames of any size and layout.

    Args:
        size: ``(height, width)`` of the frame.
        channels: 1 (gray) or 3 (RGB).
        layout: ``"hwc"``, ``"chw"`` or ``"hw"`` (gray only).
        dtype: ``"uint8"`` or ``"float32"`` (float frames lie in [0, 1]).
        image_key: if set, observations are ``Dict({image_key: image, "state": Box(3)})``.
        max_steps: episode length (truncation).
        continuous: ``Box(-1, 1, (1,))`` actions instead of ``Discrete(3)``.
        ball_radius: the ball is a square of ``2 * ball_radius + 1`` pixels; 0 draws a one-pixel ball. Default: about
            a 42nd of the height, at least 1 (a 5-pixel square at 84x84).
    """

    metadata: ClassVar[dict[str, Any]] = {"render_modes": ["rgb_array"], "render_fps": 30}

    def __init__(
        self,
        size: tuple[int, int] = (84, 84),
        channels: int = 1,
        layout: str = "hwc",
        dtype: str = "uint8",
        image_key: str | None = None,
        max_steps: int = 100,
        continuous: bool = False,
        ball_radius: int | None = None,
        render_mode: str | None = None,
    ) -> None:
        if layout == "hw" and channels != 1:
            raise ValueError("layout 'hw' is only for gray frames (channels=1)")
        if ball_radius is not None and ball_radius < 0:
            raise ValueError(f"ball_radius must be >= 0 (0 draws a one-pixel ball), got {ball_radius}")
        self.height, self.width = int(size[0]), int(size[1])
        self.ball_radius = max(1, self.height // 42) if ball_radius is None else int(ball_radius)
        self.channels, self.layout, self.dtype = channels, layout, np.dtype(dtype)
        self.image_key, self.max_steps, self.render_mode = image_key, max_steps, render_mode
        shape = {"hw": (self.height, self.width), "hwc": (self.height, self.width, channels),
                 "chw": (channels, self.height, self.width)}[layout]
        high = 255 if self.dtype == np.uint8 else 1.0
        image = spaces.Box(0, high, shape, self.dtype)
        self.observation_space = (
            spaces.Dict({image_key: image, "state": spaces.Box(-np.inf, np.inf, (3,), np.float32)})
            if image_key else image
        )
        self.action_space = spaces.Box(-1.0, 1.0, (1,), np.float32) if continuous else spaces.Discrete(3)
        self.ball = np.zeros(2, np.float32)
        self.velocity = np.zeros(2, np.float32)
        self.paddle_x = 0.0
        self.steps = 0

    # ------------------------------------------------------------------ gym API
    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[Any, dict]:
        super().reset(seed=seed)
        self.ball = self.np_random.uniform([0.2, 0.1], [0.8, 0.4]).astype(np.float32)
        angle = self.np_random.uniform(0.3, 1.2) * self.np_random.choice([-1.0, 1.0])
        self.velocity = (0.06 * np.array([np.sin(angle), np.cos(angle)])).astype(np.float32)
        self.paddle_x = float(self.np_random.uniform(0.2, 0.8))
        self.steps = 0
        return self._observation(), {}

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict]:
        move = float(np.asarray(action).reshape(-1)[0]) if self.action_space.shape else float(int(action) - 1)
        self.paddle_x = float(np.clip(self.paddle_x + 0.08 * move, 0.1, 0.9))
        self.ball += self.velocity
        for axis in (0, 1):
            if not 0.02 <= self.ball[axis] <= 0.98:
                self.velocity[axis] *= -1
                self.ball[axis] = np.clip(self.ball[axis], 0.02, 0.98)
        reward = 0.0
        if self.ball[1] > 0.86 and self.velocity[1] > 0 and abs(self.ball[0] - self.paddle_x) < 0.12:
            reward, self.velocity[1] = 1.0, -abs(self.velocity[1])
        self.steps += 1
        return self._observation(), reward, False, self.steps >= self.max_steps, {}

    def render(self) -> np.ndarray:
        gray = self._draw()
        return np.repeat(gray[..., None], 3, axis=-1)

    def get_ram(self) -> np.ndarray:
        """A 128-byte state vector in the style of the ALE's RAM (ball x, ball y, paddle x in 0..255)."""
        ram = np.zeros(128, np.uint8)
        ram[RAM_BALL_X] = int(self.ball[0] * 255)
        ram[RAM_BALL_Y] = int(self.ball[1] * 255)
        ram[RAM_PADDLE_X] = int(self.paddle_x * 255)
        return ram

    # ------------------------------------------------------------------ drawing
    def _draw(self) -> np.ndarray:
        frame = np.full((self.height, self.width), 20, np.uint8)
        frame[: max(1, self.height // 12)] = 140  # a static "wall" at the top
        bx, by = int(self.ball[0] * (self.width - 1)), int(self.ball[1] * (self.height - 1))
        r = self.ball_radius
        frame[max(0, by - r): by + r + 1, max(0, bx - r): bx + r + 1] = 255
        px, half = int(self.paddle_x * (self.width - 1)), max(2, self.width // 12)
        py = int(0.92 * (self.height - 1))
        frame[py: py + max(1, self.height // 40) + 1, max(0, px - half): px + half + 1] = 200
        return frame

    def _observation(self) -> Any:
        gray = self._draw()
        if self.channels == 3:
            image = np.stack([gray, gray // 2 + 60, 255 - gray // 2], axis=-1)
        else:
            image = gray[..., None]
        if self.layout == "hw":
            image = image[..., 0]
        elif self.layout == "chw":
            image = image.transpose(2, 0, 1)
        image = np.ascontiguousarray(image)
        if self.dtype != np.uint8:
            image = (image.astype(np.float32) / 255.0).astype(self.dtype)
        if self.image_key:
            state = np.array([*self.ball, self.paddle_x], np.float32)
            return {self.image_key: image, "state": state}
        return image
