"""A point agent must reach a goal past an obstacle: the smallest env whose expert is multimodal.

The scripted expert passes the obstacle on the left or on the right (probability 1/2 per
episode, both equally good): from the start it heads for a waypoint beside the obstacle, then for
the goal. Regression behaviour cloning learns the average of the two paths, which leads straight
into the obstacle; a policy that commits to one mode per episode succeeds.

More modes: a row of obstacles (``obstacle_x``, one x per obstacle, all at the same height and of
the same radius) leaves ``len(obstacle_x) + 1`` ways through, and the expert picks one of them
uniformly. ``vaerl/ObstacleThreeWays-v0`` is the three-way variant (two obstacles: left, middle
and right passages).

Every episode starts at the same point, below the obstacle's centre, and the layout varies in
ways that are mirror-symmetric (obstacle height and radius, goal x). That is deliberate: the two
modes then fan out from one point with an empty wedge between them, where a regression policy
interpolates and walks on between the modes. A random start x (``start_jitter``) would let it
break the tie instead: demonstrations starting right of centre pass either way, but those that
pass on the right stay nearer to it, so regression drifts to the nearer side and often
succeeds by luck of the start.

Coordinates are in the unit square, ``y`` pointing up. An episode ends on reaching the goal
(``is_success``), on touching an obstacle (collision) or after ``max_steps``. The final ``info``
says which way the agent passed the obstacles (``mode``: the passage index, 0 = leftmost, -1 not
passed; and for the one-obstacle env ``side``: -1 left, +1 right, 0 not passed), so mode coverage
can be measured for any policy, not only the expert.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, NamedTuple

import gymnasium as gym
import numpy as np
from gymnasium import spaces

OBSTACLE_ENV_ID = "vaerl/Obstacle-v0"
THREE_WAYS_ENV_ID = "vaerl/ObstacleThreeWays-v0"
THREE_WAYS_KWARGS: dict[str, Any] = {"obstacle_x": (0.3, 0.7), "obstacle_radius": (0.08, 0.1)}
OBS_TYPES = ("vector", "pixels")
LEFT, NONE, RIGHT = -1, 0, 1
NO_MODE = -1

# 8 compass directions for the Discrete variant, counter-clockwise from east (index 2 = north).
COMPASS = np.array(
    [[np.cos(a), np.sin(a)] for a in np.arange(8) * np.pi / 4], dtype=np.float32
)


@dataclass(frozen=True)
class Layout:
    """Geometry of one episode."""

    start: np.ndarray
    goal: np.ndarray
    obstacles: np.ndarray
    """``(P, 2)`` obstacle centres, left to right, all at one height."""
    obstacle_radius: float
    goal_radius: float

    @property
    def obstacle_y(self) -> float:
        return float(self.obstacles[0, 1])

    def vector(self, position: np.ndarray) -> np.ndarray:
        """The vector observation: agent xy, goal xy, each obstacle's xy, obstacle radius."""
        return np.array([*position, *self.goal, *self.obstacles.ravel(), self.obstacle_radius], dtype=np.float32)

    def passage(self, x: float) -> int:
        """Index of the passage at ``x``: 0 left of every obstacle, P right of every one."""
        return int(np.searchsorted(self.obstacles[:, 0], x, side="right"))

    def clearance(self, point: np.ndarray, a: np.ndarray | None = None) -> float:
        """Distance from ``point`` (or the segment ``a``-``point``) to the nearest obstacle's edge."""
        start = point if a is None else a
        return min(_segment_distance(centre, start, point) for centre in self.obstacles) - self.obstacle_radius


class Circle(NamedTuple):
    """A disc of the scene (for pictures): centre, radius and what it is (``obstacle``, ``goal``)."""

    x: float
    y: float
    radius: float
    kind: str


class ObstacleEnv(gym.Env):
    """Reach the goal past an obstacle; see the module docstring.

    Args:
        obs_type: ``"vector"`` (7 floats: agent xy, goal xy, obstacle xy, obstacle radius) or
            ``"pixels"`` (``(image_size, image_size, 3)`` uint8 RGB).
        continuous: ``Box(-1, 1, (2,))`` velocity actions (norm clipped to 1) or ``Discrete(8)``
            compass directions.
        image_size: side of the pixel observation.
        max_steps: episode length before truncation.
        speed: distance moved per step at full speed.
        obstacle_radius: range of the obstacles' radius.
        obstacle_y: range of the obstacles' height.
        obstacle_x: the x of each obstacle (one obstacle at 0.5: two ways past it; ``k`` obstacles:
            ``k + 1`` ways).
        goal_x: range of the goal's x (its y is always 0.9).
        start_jitter: half-width of uniform noise on the start's x (0: start at x = 0.5; see
            the module docstring for why that is the default).
        random_start: start anywhere clear of the obstacles and the goal instead, so that a random
            policy's frames cover the whole field (frames to pretrain an encoder on; not a task).
    """

    metadata: ClassVar[dict[str, Any]] = {"render_modes": ["rgb_array"], "render_fps": 15}
    episode_info_keys: ClassVar[tuple[str, ...]] = ("is_success", "mode", "side")
    """Final-info values worth keeping with recorded demonstrations."""

    def __init__(
        self,
        obs_type: str = "vector",
        continuous: bool = True,
        image_size: int = 64,
        max_steps: int = 100,
        speed: float = 0.04,
        obstacle_radius: tuple[float, float] = (0.12, 0.16),
        obstacle_y: tuple[float, float] = (0.45, 0.55),
        obstacle_x: tuple[float, ...] = (0.5,),
        goal_x: tuple[float, float] = (0.5, 0.5),
        goal_radius: float = 0.06,
        start_jitter: float = 0.0,
        random_start: bool = False,
        render_mode: str | None = None,
    ) -> None:
        if obs_type not in OBS_TYPES:
            raise ValueError(f"obs_type must be one of {OBS_TYPES}, got {obs_type!r}")
        if image_size < 16:
            raise ValueError(f"image_size must be >= 16, got {image_size}")
        self.obs_type, self.continuous, self.image_size = obs_type, continuous, int(image_size)
        self.max_steps, self.speed = int(max_steps), float(speed)
        self.obstacle_radius = _range("obstacle_radius", obstacle_radius)
        self.obstacle_y, self.goal_x = _range("obstacle_y", obstacle_y), _range("goal_x", goal_x)
        self.obstacle_x = tuple(float(x) for x in obstacle_x)
        if not self.obstacle_x or list(self.obstacle_x) != sorted(set(self.obstacle_x)) or not (
                0.0 < self.obstacle_x[0] and self.obstacle_x[-1] < 1.0):
            raise ValueError(f"obstacle_x must be increasing x positions inside (0, 1), got {obstacle_x}")
        self.mode_names = _mode_names(len(self.obstacle_x) + 1)
        """Names of the ways past the obstacles, by the ``mode`` index the final info reports."""
        self.goal_radius, self.start_jitter = float(goal_radius), float(start_jitter)
        self.random_start = bool(random_start)
        self.render_mode = render_mode
        if obs_type == "vector":
            self.observation_space = spaces.Box(0.0, 1.0, (5 + 2 * len(self.obstacle_x),), np.float32)
        else:
            self.observation_space = spaces.Box(0, 255, (self.image_size, self.image_size, 3), np.uint8)
        self.action_space = spaces.Box(-1.0, 1.0, (2,), np.float32) if continuous else spaces.Discrete(len(COMPASS))
        self.layout = self._sample_layout(np.random.default_rng(0))
        self.position = self.layout.start.copy()
        self.mode = NO_MODE
        self.steps = 0

    # ------------------------------------------------------------------ gym API
    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[Any, dict]:
        super().reset(seed=seed)
        self.layout = self._sample_layout(self.np_random)
        self.position = self.layout.start.copy()
        self.mode, self.steps = NO_MODE, 0
        return self._observation(), self._info(success=False, collision=False)

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict]:
        velocity = self.action_to_velocity(action)
        previous = self.position.copy()
        self.position = np.clip(self.position + self.speed * velocity, 0.0, 1.0).astype(np.float32)
        self.steps += 1
        layout = self.layout
        if self.mode == NO_MODE and previous[1] < layout.obstacle_y <= self.position[1]:
            self.mode = layout.passage(float(self.position[0]))
        collision = layout.clearance(self.position, previous) < 0
        success = not collision and float(np.linalg.norm(self.position - self.layout.goal)) < self.layout.goal_radius
        # progress shaping plus a terminal bonus/penalty, so RL agents can learn it too
        reward = float(np.linalg.norm(previous - self.layout.goal) - np.linalg.norm(self.position - self.layout.goal))
        reward += 1.0 if success else (-1.0 if collision else 0.0)
        truncated = self.steps >= self.max_steps and not (success or collision)
        return self._observation(), reward, success or collision, truncated, self._info(success, collision)

    def render(self) -> np.ndarray:
        return self._draw()

    # ------------------------------------------------------------------ helpers
    def action_to_velocity(self, action: Any) -> np.ndarray:
        """A unit-disc velocity from a ``Box`` action (norm clipped to 1) or a compass index."""
        if not self.continuous:
            return COMPASS[int(np.asarray(action).reshape(()))]
        velocity = np.clip(np.asarray(action, dtype=np.float32).reshape(2), -1.0, 1.0)
        norm = float(np.linalg.norm(velocity))
        return velocity / norm if norm > 1.0 else velocity

    def scripted_expert(self, seed: int | None = None) -> ObstacleExpert:
        """The multimodal expert for this env (used by ``collect_demos expert=scripted``)."""
        return ObstacleExpert(self, seed)

    @property
    def side(self) -> int:
        """With one obstacle: -1 passed on the left, +1 on the right, 0 not passed (or several obstacles)."""
        if len(self.obstacle_x) != 1 or self.mode == NO_MODE:
            return NONE
        return LEFT if self.mode == 0 else RIGHT

    def scene(self) -> list[Circle]:
        """The obstacles at their mean place and size, the largest ones, and the goal (for pictures)."""
        y, radius = float(np.mean(self.obstacle_y)), float(np.mean(self.obstacle_radius))
        circles = [Circle(x, y, radius, "obstacle") for x in self.obstacle_x]
        circles += [Circle(x, y, max(self.obstacle_radius), "largest obstacle") for x in self.obstacle_x]
        return [*circles, Circle(float(np.mean(self.goal_x)), 0.9, self.goal_radius, "goal")]

    def _sample_layout(self, rng: np.random.Generator) -> Layout:
        start = np.array([0.5 + rng.uniform(-self.start_jitter, self.start_jitter), 0.08], np.float32)
        height = rng.uniform(*self.obstacle_y)
        obstacles = np.array([[x, height] for x in self.obstacle_x], np.float32)
        goal = np.array([rng.uniform(*self.goal_x), 0.9], np.float32)
        layout = Layout(start, goal, obstacles, float(rng.uniform(*self.obstacle_radius)), self.goal_radius)
        while self.random_start:
            start = rng.uniform(0.02, 0.98, 2).astype(np.float32)
            if layout.clearance(start) > self.speed and np.linalg.norm(start - goal) > 2 * self.goal_radius:
                return Layout(start, goal, obstacles, layout.obstacle_radius, self.goal_radius)
        return layout

    def _info(self, success: bool, collision: bool) -> dict[str, Any]:
        return {
            "is_success": bool(success),
            "collision": bool(collision),
            "mode": int(self.mode),
            "side": int(self.side),
            "position": self.position.copy(),
        }

    def _observation(self) -> np.ndarray:
        if self.obs_type == "vector":
            return self.layout.vector(self.position)
        return self._draw()

    def _draw(self) -> np.ndarray:
        size = self.image_size
        centers = (np.arange(size, dtype=np.float32) + 0.5) / size
        xs, ys = np.meshgrid(centers, centers[::-1])  # row 0 is the top (y = 1)
        frame = np.full((size, size, 3), 235, np.uint8)

        def disc(center: np.ndarray, radius: float) -> np.ndarray:
            return (xs - center[0]) ** 2 + (ys - center[1]) ** 2 <= radius**2

        agent_radius = max(2.0 / size, 0.025)
        frame[disc(self.layout.goal, self.layout.goal_radius)] = (60, 180, 75)
        for centre in self.layout.obstacles:
            frame[disc(centre, self.layout.obstacle_radius)] = (200, 40, 40)
        frame[disc(self.position, agent_radius)] = (30, 60, 220)
        return frame


class ObstacleExpert:
    """Scripted multimodal expert with the SB3 ``predict`` signature.

    At each episode start it draws a way past the obstacles (left/right with one obstacle, each of
    the ``k + 1`` passages with ``k``; uniformly) from its own seeded generator and keeps it for the
    whole episode. It reads the env's true state, so it serves every observation type. Path:
    straight to a waypoint in the chosen passage at the obstacles' height (``clearance`` beside an
    outer obstacle, or half-way to the wall when that is nearer; midway between two obstacles),
    then straight to the goal.
    """

    def __init__(self, env: gym.Env, seed: int | None = None, clearance: float = 0.15) -> None:
        self.env: ObstacleEnv = env.unwrapped  # type: ignore[assignment]
        if not isinstance(self.env, ObstacleEnv):
            raise TypeError(f"ObstacleExpert needs an ObstacleEnv, got {type(self.env).__name__}")
        self.rng = np.random.default_rng(seed)
        self.clearance = clearance
        self.mode = 0

    @property
    def num_modes(self) -> int:
        return len(self.env.obstacle_x) + 1

    def begin_episode(self) -> None:
        self.mode = min(int(self.rng.random() * self.num_modes), self.num_modes - 1)

    def target(self) -> np.ndarray:
        """The waypoint of the current phase (the expert is a function of state and mode only)."""
        layout, y = self.env.layout, self.env.position[1]
        if y < layout.obstacle_y:
            # aimed one step past the obstacles' height, so that compass moves cross it instead of
            # dithering just below it
            return np.array([self.passage_x(), layout.obstacle_y + self.env.speed], np.float32)
        return layout.goal

    def passage_x(self) -> float:
        """Where the chosen passage is crossed."""
        xs, radius, mode = self.env.obstacle_x, self.env.layout.obstacle_radius, self.mode
        if mode == 0:
            return xs[0] - radius - min(self.clearance, (xs[0] - radius) / 2)
        if mode == len(xs):
            return xs[-1] + radius + min(self.clearance, (1.0 - xs[-1] - radius) / 2)
        return (xs[mode - 1] + xs[mode]) / 2

    def velocity(self) -> np.ndarray:
        delta = self.target() - self.env.position
        norm = float(np.linalg.norm(delta))
        return delta / norm if norm > 1e-6 else np.zeros(2, np.float32)

    def act(self) -> Any:
        velocity = self.velocity()
        if self.env.continuous:
            return velocity.astype(np.float32)
        # the compass direction closest to the wanted one that keeps clear of the obstacle
        layout, position = self.env.layout, self.env.position
        for index in np.argsort(-(COMPASS @ velocity), kind="stable"):
            if layout.clearance(position + self.env.speed * COMPASS[index]) > 0.02:
                return int(index)
        return int(np.argmax(COMPASS @ velocity))

    def predict(
        self,
        observation: Any,
        state: Any = None,
        episode_start: np.ndarray | None = None,
        deterministic: bool = True,
    ) -> tuple[Any, Any]:
        starting = self.env.steps == 0 if episode_start is None else bool(np.asarray(episode_start).reshape(-1)[0])
        if starting:
            self.begin_episode()
        return self.act(), state


def _mode_names(count: int) -> tuple[str, ...]:
    if count == 2:
        return ("left", "right")
    if count == 3:
        return ("left", "middle", "right")
    return tuple(f"passage {i}" for i in range(count))


def _range(name: str, bounds: tuple[float, float]) -> tuple[float, float]:
    low, high = (float(v) for v in bounds)
    if not 0.0 <= low <= high <= 1.0:
        raise ValueError(f"{name} must be a range (low, high) inside [0, 1], got {bounds}")
    return low, high


def _segment_distance(point: np.ndarray, a: np.ndarray, b: np.ndarray) -> float:
    """Distance from ``point`` to the segment ``a-b`` (a step cannot tunnel through the obstacle)."""
    ab = b - a
    length2 = float(ab @ ab)
    t = 0.0 if length2 == 0 else float(np.clip((point - a) @ ab / length2, 0.0, 1.0))
    return float(np.linalg.norm(a + t * ab - point))


def register_obstacle_env() -> None:
    from gymnasium.envs.registration import register, registry

    if OBSTACLE_ENV_ID not in registry:
        register(id=OBSTACLE_ENV_ID, entry_point="vaerl.envs.obstacle:ObstacleEnv")
    if THREE_WAYS_ENV_ID not in registry:
        register(id=THREE_WAYS_ENV_ID, entry_point="vaerl.envs.obstacle:ObstacleEnv", kwargs=dict(THREE_WAYS_KWARGS))


register_obstacle_env()
