"""Building environments from an :class:`EnvConfig`: ALE games with standard preprocessing, or any gymnasium env."""

from __future__ import annotations

import dataclasses
import importlib
from dataclasses import dataclass, field
from typing import Any

import gymnasium as gym

from vaerl.errors import ConfigError
from vaerl.preprocessing import PreprocessSpec

FAKE_ENV_ID = "vaerl/FakeFrames-v0"
ENV_KINDS = ("atari", "gym")


@dataclass
class EnvConfig:
    """Which env to build and how its frames are turned into encoder input.

    The Atari defaults follow the RL Zoo's Atari benchmark (``*NoFrameskip-v4`` + ``AtariWrapper``):
    frame skip 4 with max-pooling, up to 30 no-ops at reset, 84x84 grayscale, no sticky actions.
    Reward clipping, episodic life and fire-on-reset are training-time wrappers added by the agents.
    """

    name: str = "Breakout"
    """Short name, used in run and dataset paths."""
    id: str = "ALE/Breakout-v5"
    """Gymnasium id (``ALE/Pong-v5``, ``CarRacing-v3``, ``vaerl/FakeFrames-v0``) or ``module:Class``."""
    kind: str = "atari"
    """``atari`` (ALE game + standard preprocessing) or ``gym`` (any env with image observations)."""
    kwargs: dict[str, Any] = field(default_factory=dict)
    """Extra keyword arguments for the env constructor."""
    frame_skip: int = 4
    noop_max: int = 30
    screen_size: int = 84
    sticky_actions: float = 0.0
    """Atari repeat_action_probability (0.25 = Machado et al.'s v5 protocol, 0.0 = RL Zoo)."""
    full_action_space: bool = False
    terminal_on_life_loss: bool = False
    max_episode_steps: int | None = None
    image_key: str | None = None
    """Key of the image in a ``Dict`` observation."""
    layout: str | None = None
    """Axis order of the env's images, ``hwc``/``chw``/``hw``; inferred when unambiguous."""
    size: tuple[int, int] | None = None
    """``(H, W)`` of the encoder input; ``None`` keeps the env's own size."""
    grayscale: bool = True
    """Convert frames to gray (for Atari this also asks the ALE for gray frames)."""
    frame_stack: int = 1
    """Consecutive frames stacked along channels for the encoder."""

    def __post_init__(self) -> None:
        if self.kind not in ENV_KINDS:
            raise ConfigError(f"env.kind must be one of {ENV_KINDS}, got {self.kind!r}")
        if self.size is not None:
            self.size = tuple(int(s) for s in self.size)  # type: ignore[assignment]

    @property
    def is_atari(self) -> bool:
        return self.kind == "atari"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def make_env(config: EnvConfig, *, seed: int | None = None, render_mode: str | None = None) -> gym.Env:
    """Build the env described by ``config``; seeds the action space when ``seed`` is given.

    The env itself is seeded by the first ``reset(seed=...)`` of whoever uses it.
    """
    if config.is_atari:
        env = _make_atari(config, render_mode)
    else:
        env = _make_gym(config, render_mode)
    if seed is not None:
        env.action_space.seed(seed)
    return env


def preprocess_spec(config: EnvConfig, env: gym.Env) -> PreprocessSpec:
    """The encoder-input spec for frames of ``env`` as configured."""
    return PreprocessSpec.from_space(env.observation_space, size=config.size, grayscale=config.grayscale,
                                     frame_stack=config.frame_stack, image_key=config.image_key, layout=config.layout)


def _make_atari(config: EnvConfig, render_mode: str | None) -> gym.Env:
    import ale_py

    gym.register_envs(ale_py)
    kwargs = dict(
        frameskip=1,  # AtariPreprocessing does the skipping, with max-pooling over the last two frames
        repeat_action_probability=config.sticky_actions,
        full_action_space=config.full_action_space,
        **config.kwargs,
    )
    if config.max_episode_steps is not None:
        kwargs["max_episode_steps"] = config.max_episode_steps
    try:
        env = gym.make(config.id, render_mode=render_mode, **kwargs)
    except gym.error.Error as exc:
        raise ConfigError(f"cannot build Atari env {config.id!r}: {exc}. Use an id such as ALE/Breakout-v5") from exc
    return gym.wrappers.AtariPreprocessing(
        env,
        noop_max=config.noop_max,
        frame_skip=config.frame_skip,
        screen_size=config.screen_size,
        terminal_on_life_loss=config.terminal_on_life_loss,
        grayscale_obs=config.grayscale,
    )


def _make_gym(config: EnvConfig, render_mode: str | None) -> gym.Env:
    kwargs = dict(config.kwargs)
    if render_mode is not None:
        kwargs["render_mode"] = render_mode
    if ":" in config.id and "/" not in config.id.split(":")[0]:
        env: gym.Env = _import_class(config.id)(**kwargs)
        if config.max_episode_steps is not None:
            env = gym.wrappers.TimeLimit(env, config.max_episode_steps)
        return env
    import vaerl.envs  # noqa: F401  (registers vaerl's own ids)

    try:
        return gym.make(config.id, max_episode_steps=config.max_episode_steps, **kwargs)
    except gym.error.Error as exc:
        raise ConfigError(
            f"cannot build env {config.id!r}: {exc}. Give a registered gymnasium id or 'package.module:ClassName'"
        ) from exc


def _import_class(target: str) -> type:
    module_name, _, attr = target.partition(":")
    try:
        module = importlib.import_module(module_name)
        return getattr(module, attr)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"cannot import env class {target!r}: {exc}") from exc
