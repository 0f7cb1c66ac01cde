"""What an agent observes, one small object per pipeline.

=============================  ==========================================  ==============================
pipeline                       env wrapper                                 policy
=============================  ==========================================  ==============================
:class:`LatentObservations`    frozen encoder in the env (LatentVecEnv)    MLP on stacked latents
:class:`FinetuneObservations`  stacked preprocessed frames                 the encoder inside the policy
:class:`PixelObservations`     4 stacked preprocessed frames               NatureCNN (the pixel baseline)
:class:`RawObservations`       none (envs without images)                  MLP / MultiInput
=============================  ==========================================  ==============================

Each also says how many torch threads it wants and what ``play.mp4`` shows. :func:`observations_for`
picks the one a run config asks for.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import gymnasium as gym
import numpy as np
import torch
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.vec_env import VecEnv

from agents.rl.config import TrainAgentConfig
from agents.rl.features import (
    CELL_CONV_FEATURES,
    CELL_CONV_SPREAD,
    CELL_CONV_WIDTHS,
    STANDARDIZE_FLOOR,
    CellConvFeatures,
    EncoderFeatures,
    ProjectionConvFeatures,
    StandardizedLatents,
    load_pretrained,
    window_frames,
)
from vaerl.encoder import Encoder
from vaerl.envs.make import EnvConfig, preprocess_spec
from vaerl.errors import ConfigError
from vaerl.wrappers import LatentVecEnv, PreprocessedVecEnv

PIXEL_FRAME_STACK = 4  # the Nature DQN / RL Zoo Atari input: 4 stacked 84x84 gray frames
STANDARDIZE_STEPS = 256
"""Steps of random play (in every training env) whose latents fit ``encoder.standardize``: 2,048
observations with PPO's 8 envs, a few seconds."""

Frame = np.ndarray  # (C, H, W) uint8
Reconstruction = np.ndarray  # (C, H, W) in [0, 1]


class Observations:
    """How one kind of run turns env observations into policy inputs, and what its video shows."""

    threads: ClassVar[int] = 1
    """Torch CPU threads of a run with ``threads=0``. Conv nets trained in the policy want two; a frozen
    encoder in the env loop runs between ale-py's worker threads, where two torch threads spin-wait into
    them, and a small MLP learner gains nothing from a second one (``scripts/bench_agent.py`` times both)."""
    filmed: ClassVar[bool] = True
    """Whether ``play.mp4`` has frames to show."""
    default_policy: ClassVar[str] = "MlpPolicy"
    encoder: Encoder | None = None

    def base_frame_stack(self) -> int:
        """Frames the base vector env stacks itself (ale-py stacks natively, faster than a Python stack)."""
        return 1

    def wrap(self, venv: VecEnv) -> VecEnv:
        """The agent's env around the base vector env."""
        return venv

    def policy(self, settings: dict[str, Any], space: gym.Space) -> str:
        """The SB3 policy name: the agent config's (``pixel.policy`` / ``latent.policy``) or this pipeline's."""
        return settings.get("policy", self.default_policy)

    def policy_kwargs(self) -> dict[str, Any]:
        """Policy arguments beyond the agent config's."""
        return {}

    def initialise(self, model: BaseAlgorithm, encoder_file: Path) -> None:
        """Prepare a freshly built model (nothing to do unless the policy holds an encoder)."""

    def frame(self, env: VecEnv, obs: np.ndarray, index: int = 0) -> Frame:
        """The preprocessed frame env ``index`` shows now (``obs``: the agent's observations of ``env``)."""
        raise NotImplementedError(f"{type(self).__name__} observes no frames")

    def view(self, model: BaseAlgorithm, env: VecEnv, obs: np.ndarray) -> tuple[Frame, Reconstruction | None]:
        """The frame env 0 shows now and, where there is an encoder, the reconstruction of its latent."""
        return self.frame(env, obs), None


@dataclass(frozen=True)
class LatentObservations(Observations):
    """A frozen encoder in the env: the agent sees ``stack`` latents (or latent and change), standardised
    in the policy with ``standardize`` (:class:`~agents.rl.features.StandardizedLatents`; signed cells with
    one scale and unclipped; frame projections with one scale per axis where ``projection_scale="axis"``,
    blurred along their axis by ``projection_blur``, with ``projection_keypoints`` beside them, moved by up
    to ``projection_shift`` places while the policy learns; followed by ``shared_layers`` that the policy
    and value heads share), their frame projections read by 1-D convolutions with ``projection_conv``
    (:class:`~agents.rl.features.ProjectionConvFeatures`), their grid of cells by 2-D convolutions with
    ``cell_conv`` (:class:`~agents.rl.features.CellConvFeatures`, ``cell_conv_widths`` filters and a
    ``cell_conv_features``-unit join, with each grid's change as channels too where ``cell_conv_motion``, the
    cells at ``cell_conv_spread``, through ``asinh`` where ``cell_conv_asinh``)."""

    encoder: Encoder
    mode: str = "mean"
    stack: int = 4
    stack_mode: str = "concat"
    standardize: bool = True
    standardize_floor: float = STANDARDIZE_FLOOR
    projection_scale: str = "number"
    projection_blur: float = 0.0
    projection_keypoints: int = 0
    projection_shift: int = 0
    shared_layers: tuple[int, ...] = ()
    projection_conv: bool = False
    cell_conv: bool = False
    cell_conv_widths: tuple[int, ...] = CELL_CONV_WIDTHS
    cell_conv_features: int = CELL_CONV_FEATURES
    cell_conv_motion: bool = False
    cell_conv_spread: float = CELL_CONV_SPREAD
    cell_conv_asinh: bool = False

    threads: ClassVar[int] = 1

    def __post_init__(self) -> None:
        for name, value in (("cell_conv", self.cell_conv), ("cell_conv_motion", self.cell_conv_motion)):
            if value and self.encoder.model.cells() is None:
                raise ConfigError(f"encoder.{name} reads a grid of foreground cells, but {self.encoder.kind} latents "
                                  f"are {self.encoder.model.describe_latent()}: set encoder.{name}=false, or pretrain "
                                  "with model.foreground_cells=14")
        if self.encoder.model.projections() is not None:
            return
        for name, value in [*self._projection_options().items(), ("projection_conv", self.projection_conv)]:
            off = "false" if isinstance(value, bool) else "0"
            if value:
                raise ConfigError(f"encoder.{name} reads frame projections, but {self.encoder.kind} latents are "
                                  f"{self.encoder.model.describe_latent()}: set encoder.{name}={off}, or pretrain "
                                  f"with model.foreground_projections=true model.foreground_sums=true")

    def _projection_options(self) -> dict[str, float | int]:
        """The :class:`~agents.rl.features.StandardizedLatents` options that read frame projections, as set."""
        return {"projection_blur": self.projection_blur, "projection_keypoints": self.projection_keypoints,
                "projection_shift": self.projection_shift}

    def wrap(self, venv: VecEnv) -> VecEnv:
        return LatentVecEnv(venv, self.encoder, mode=self.mode, stack=self.stack, stack_mode=self.stack_mode)

    def policy_kwargs(self) -> dict[str, Any]:
        if self.cell_conv:
            cells = self.encoder.model.cells()
            assert cells is not None
            return {"features_extractor_class": CellConvFeatures, "net_arch": [],  # linear heads, as on pixels
                    "features_extractor_kwargs": {"layout": cells._asdict(), "stack": self.stack,
                                                  "widths": list(self.cell_conv_widths),
                                                  "features_dim": self.cell_conv_features,
                                                  "motion": self.cell_conv_motion,
                                                  "spread": self.cell_conv_spread,
                                                  "asinh": self.cell_conv_asinh,
                                                  "floor": self.standardize_floor}}
        if self.projection_conv:
            layout = self.encoder.model.projections()
            assert layout is not None
            return {"features_extractor_class": ProjectionConvFeatures,
                    "features_extractor_kwargs": {"layout": layout._asdict(), "stack": self.stack,
                                                  "floor": self.standardize_floor}}
        if not self.standardize:
            return {}
        options: dict[str, Any] = {"floor": self.standardize_floor}
        layout = self.encoder.model.projections()
        reading = {name: value for name, value in self._projection_options().items() if value}
        if layout is not None and (self.projection_scale == "axis" or reading):
            options.update(layout=layout._asdict(), projection_scale=self.projection_scale)
        cells = self.encoder.model.cells()
        if cells is not None and cells.signed:  # one picture, one scale, never clipped
            options.update(cells=cells._asdict())
        options.update(reading)
        if not self.shared_layers:
            return {"features_extractor_class": StandardizedLatents, "features_extractor_kwargs": options}
        return {"features_extractor_class": StandardizedLatents, "net_arch": [],  # linear heads, as on pixels
                "features_extractor_kwargs": {**options, "shared_layers": list(self.shared_layers)}}

    def initialise(self, model: BaseAlgorithm, encoder_file: Path) -> None:
        if not self.standardize:
            return
        observations = random_play(model.get_env(), STANDARDIZE_STEPS)
        for extractor in model.policy.modules():
            if isinstance(extractor, (StandardizedLatents, ProjectionConvFeatures, CellConvFeatures)):
                extractor.fit(observations)

    def frame(self, env: VecEnv, obs: np.ndarray, index: int = 0) -> Frame:
        assert isinstance(env, LatentVecEnv)
        return env.newest(index)[0]

    def view(self, model: BaseAlgorithm, env: VecEnv, obs: np.ndarray) -> tuple[Frame, Reconstruction | None]:
        assert isinstance(env, LatentVecEnv)
        frame, latent = env.newest(0)
        return frame, _reconstruction(self.encoder, torch.as_tensor(latent[None]), self.mode)


@dataclass(frozen=True)
class FinetuneObservations(Observations):
    """Preprocessed frames into an encoder inside the policy, trained with it."""

    encoder: Encoder
    stack: int = 4
    stack_mode: str = "concat"

    threads: ClassVar[int] = 2  # a conv net trained in the policy wants two

    def wrap(self, venv: VecEnv) -> VecEnv:
        spec = self.encoder.spec
        window = window_frames(spec.frame_stack, self.stack, self.stack_mode)
        return PreprocessedVecEnv(venv, spec.replace(frame_stack=1), frame_stack=window)

    def policy_kwargs(self) -> dict[str, Any]:
        return {
            "features_extractor_class": EncoderFeatures,
            "features_extractor_kwargs": {
                # the settings the encoder was built with: an older checkpoint's stored ones lack later settings,
                # whose defaults would build another model (FrameModel.stored_config)
                "kind": self.encoder.kind, "model_config": self.encoder.model.config_dict(),
                "frames_per_input": self.encoder.spec.frame_stack, "stack": self.stack,
                "stack_mode": self.stack_mode, "trainable": True,
            },
        }

    def initialise(self, model: BaseAlgorithm, encoder_file: Path) -> None:
        load_pretrained(model.policy, encoder_file)

    def frame(self, env: VecEnv, obs: np.ndarray, index: int = 0) -> Frame:
        return obs[index, -self.encoder.spec.channels_per_frame:]

    def view(self, model: BaseAlgorithm, env: VecEnv, obs: np.ndarray) -> tuple[Frame, Reconstruction | None]:
        # the policy's own (fine-tuned) encoder gives the latent, the checkpoint's decoder draws it
        extractor = next(m for m in model.policy.modules() if isinstance(m, EncoderFeatures))
        frame = self.frame(env, obs)
        window = torch.as_tensor(obs[:, -extractor.in_channels:], device=model.device).float() / 255.0
        with torch.no_grad():
            latent = extractor.model.features(window)
        return frame, _reconstruction(self.encoder, latent, "mean")


@dataclass(frozen=True)
class PixelObservations(Observations):
    """The pixel baseline: 4 stacked preprocessed frames into NatureCNN."""

    env: EnvConfig

    threads: ClassVar[int] = 2  # a conv net trained in the policy wants two
    default_policy: ClassVar[str] = "CnnPolicy"

    @property
    def _stacked_by_ale(self) -> bool:
        return self.env.is_atari and self.env.grayscale

    def base_frame_stack(self) -> int:
        return PIXEL_FRAME_STACK if self._stacked_by_ale else 1

    def wrap(self, venv: VecEnv) -> VecEnv:
        if self._stacked_by_ale:
            return venv
        return PreprocessedVecEnv(venv, preprocess_spec(self.env, venv), frame_stack=PIXEL_FRAME_STACK)

    def frame(self, env: VecEnv, obs: np.ndarray, index: int = 0) -> Frame:
        channels = obs.shape[1] // PIXEL_FRAME_STACK
        return obs[index, -channels:]


@dataclass(frozen=True)
class RawObservations(Observations):
    """Envs without images: the agent sees their observations as they are."""

    filmed: ClassVar[bool] = False

    def policy(self, settings: dict[str, Any], space: gym.Space) -> str:
        # the pixel settings' CnnPolicy has no images to look at here
        return "MultiInputPolicy" if isinstance(space, gym.spaces.Dict) else "MlpPolicy"


def observations_for(cfg: TrainAgentConfig, encoder: Encoder | None, has_images: bool) -> Observations:
    """The pipeline of a run: ``latent=true`` needs ``encoder``; ``latent=false`` looks at pixels if there are any."""
    if not cfg.latent:
        return PixelObservations(cfg.env) if has_images else RawObservations()
    assert encoder is not None, "latent=true runs need their encoder"
    options = cfg.encoder
    if options.finetune:  # a fine-tuned encoder learns its own scale: encoder.standardize does not apply
        return FinetuneObservations(encoder, stack=options.stack, stack_mode=options.stack_mode)
    return LatentObservations(encoder, mode=options.mode, stack=options.stack, stack_mode=options.stack_mode,
                              standardize=options.standardize, standardize_floor=options.standardize_floor,
                              projection_scale=options.projection_scale,
                              projection_blur=options.projection_blur,
                              projection_keypoints=options.projection_keypoints,
                              projection_shift=options.projection_shift,
                              shared_layers=tuple(options.shared_layers), projection_conv=options.projection_conv,
                              cell_conv=options.reads_cells(encoder.model.cells() is not None),
                              cell_conv_widths=tuple(options.cell_conv_widths),
                              cell_conv_features=options.cell_conv_features,
                              cell_conv_motion=options.cell_conv_motion,
                              cell_conv_spread=options.cell_conv_spread,
                              cell_conv_asinh=options.cell_conv_asinh)


def random_play(env: VecEnv, steps: int) -> np.ndarray:
    """Observations ``(steps * num_envs, ...)`` of ``steps`` uniformly random actions in every env of ``env``,
    from a reset (the action space's own RNG, which the agent's seed sets). Training resets ``env`` again."""
    observations = [env.reset()]
    for _ in range(steps - 1):
        actions = np.stack([env.action_space.sample() for _ in range(env.num_envs)])
        observations.append(env.step(actions)[0])
    return np.concatenate(observations)


def _reconstruction(encoder: Encoder, latent: torch.Tensor, mode: str) -> Reconstruction:
    channels = encoder.spec.channels_per_frame
    recon = encoder.decode(latent.to(encoder.device), mode)[0, -channels:]
    return recon.float().cpu().numpy()
