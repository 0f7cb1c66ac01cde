"""Behaviour-cloning policies with Stable-Baselines3's ``predict``: CVAE-BC and the regression baselines.

Acting, for every policy kind:

1. the network predicts a chunk of ``chunk`` actions, every step (``temporal_ensemble``) or at the
   start of each chunk, which is then executed open-loop;
2. with temporal ensembling, overlapping predictions for the current step are averaged as in ACT
   (Zhao et al. 2023): weights ``exp(-m * i)``, ``i = 0`` for the oldest prediction;
3. the head turns the average into the action (argmax or a sample for discrete actions; the mean,
   plus Gaussian noise unless ``deterministic``, for continuous ones).

CVAE-BC draws its latent noise (Gaussian noise, plus the component pick of a mixture prior) once
per episode (``z_sample=episode``), every ``chunk`` steps (``chunk``), or uses the prior mean
(``mean``). ``deterministic`` only removes per-step action noise: the per-episode latent is what
makes CVAE-BC commit to one mode, so it is drawn either way. On a bimodal task the prior *mean*
lies between the modes and decodes to their average, like regression.
"""

from __future__ import annotations

import itertools
from dataclasses import asdict, dataclass, field
from typing import Any, NamedTuple

import numpy as np
import torch
from gymnasium import spaces
from torch import nn

from vaerl.data.demos import DemoMetadata, Demos, describe_space, space_from_description
from vaerl.errors import ConfigError, ObservationError
from vaerl.models.bc import CVAE, PRIORS, BCNetwork, CVAEConfig, RegressionNet, make_action_head, mdn_network
from vaerl.models.blocks import NATURE_LAYERS

POLICY_KINDS = ("cvae", "mse", "mdn")
Z_SAMPLES = ("episode", "chunk", "mean")
BOX_HEADS = ("auto", "gaussian", "mean")


@dataclass
class BCPolicyConfig:
    """A BC policy; the defaults are the CVAE-BC that meets the obstacle benchmark's floors."""

    kind: str = "cvae"
    """``cvae``; ``mse`` (regression BC: MSE for Box actions, cross-entropy for Discrete); ``mdn``."""
    hidden: list[int] = field(default_factory=lambda: [256, 256])
    chunk: int = 1
    """Actions predicted per step (action chunking)."""
    temporal_ensemble: bool = True
    """Predict every step and average overlapping chunks (ACT); false: execute each chunk open-loop."""
    ensemble_decay: float = 0.01
    """ACT's ``m``: weight ``exp(-m * i)`` of the i-th oldest prediction (0 = plain average)."""
    action_head: str = "auto"
    """Box actions of ``cvae``: ``mean`` (squared-error reconstruction) or ``gaussian`` (learned
    variance); auto = mean. Discrete actions always get a categorical head."""
    latent_dim: int = 2
    """CVAE latent size."""
    beta: float = 0.1
    """CVAE KL weight."""
    prior: str = "mixture"
    """CVAE prior: ``standard`` N(0, I), ``learned`` Gaussian p(z | s), ``mixture`` of Gaussians
    p(z | s). With N(0, I), prior draws between the posteriors of two modes decode to their average
    (about a quarter of episodes on the obstacle env); a mixture puts a component on each mode."""
    prior_components: int = 5
    """Components of the ``mixture`` prior."""
    z_sample: str = "episode"
    """CVAE latent at test time: ``episode`` (one draw per episode), ``chunk`` (a draw every
    ``chunk`` steps) or ``mean`` (the prior mean)."""
    components: int = 5
    """MDN mixture components."""
    conv_layers: list[list[int]] = field(default_factory=lambda: [list(layer) for layer in NATURE_LAYERS])
    """Conv trunk for image observations, ``[channels, kernel, stride, padding]`` per layer."""
    image_features: int = 256

    def __post_init__(self) -> None:
        if self.kind not in POLICY_KINDS:
            raise ConfigError(f"policy kind must be one of {POLICY_KINDS}, got {self.kind!r}")
        if self.z_sample not in Z_SAMPLES:
            raise ConfigError(f"z_sample must be one of {Z_SAMPLES}, got {self.z_sample!r}")
        if self.action_head not in BOX_HEADS:
            raise ConfigError(f"action_head must be one of {BOX_HEADS}, got {self.action_head!r}")
        if self.chunk < 1 or self.latent_dim < 1 or self.components < 1 or self.prior_components < 1:
            raise ConfigError("chunk, latent_dim, components and prior_components must be >= 1")
        if self.prior not in PRIORS:
            raise ConfigError(f"prior must be one of {PRIORS}, got {self.prior!r}")
        if self.beta < 0 or self.ensemble_decay < 0:
            raise ConfigError("beta and ensemble_decay must be >= 0")


@dataclass
class PolicyEnvSpec:
    """What a policy was trained on: which env, its spaces, and what the policy observes."""

    env_id: str | None
    observation_space: dict[str, Any]
    """The env's raw observation space (description from :func:`vaerl.data.demos.describe_space`)."""
    action_space: dict[str, Any]
    obs_shape: tuple[int, ...]
    """What ``predict`` receives: the raw observation, or a latent when ``obs_transform`` is set."""
    obs_dtype: str
    obs_transform: str | None = None
    env_config: dict[str, Any] | None = None
    encoder_digest: str | None = None
    """Content digest of the encoder behind ``obs_transform`` (policies trained by vaerl >= 0.1 on latents)."""

    def __post_init__(self) -> None:
        self.obs_shape = tuple(int(v) for v in self.obs_shape)

    @classmethod
    def from_demos(cls, demos: Demos) -> PolicyEnvSpec:
        meta = demos.metadata
        return cls(meta.env_id, meta.observation_space, meta.action_space, meta.stored_obs_shape,
                   meta.stored_obs_dtype, meta.obs_transform, meta.env_config, meta.encoder_digest)

    def observes_like(self, meta: DemoMetadata) -> bool:
        """Whether demonstrations with ``meta`` hold what this policy observes (same encoder, or raw both)."""
        if (self.obs_transform is None) != (meta.obs_transform is None):
            return False
        if self.encoder_digest is not None and meta.encoder_digest is not None:
            return self.encoder_digest == meta.encoder_digest
        return self.obs_transform == meta.obs_transform


class TrainingData(NamedTuple):
    """Demonstrations as tensors: observations in network layout, action chunks in [-1, 1] or indices."""

    obs: torch.Tensor  # (T, *network_obs_shape)
    actions: torch.Tensor  # (T, chunk, action_dim) float or (T, chunk) long
    mask: torch.Tensor  # (T, chunk) 1 where the chunk step lies inside the episode


@dataclass
class _ActingState:
    noise: torch.Tensor  # (n_envs, latent_dim)
    sums: torch.Tensor  # (n_envs, chunk, point_dim): weighted sums of predictions for the next steps
    weights: torch.Tensor  # (n_envs, chunk)
    params: torch.Tensor  # (n_envs, chunk, num_params): the newest prediction's parameters per step (action noise)
    steps: np.ndarray  # (n_envs,) steps since the episode started


class BCPolicy(nn.Module):
    """A behaviour-cloning policy (any kind) with SB3's ``predict(obs, state, episode_start, deterministic)``."""

    def __init__(self, config: BCPolicyConfig, spec: PolicyEnvSpec) -> None:
        super().__init__()
        self.config, self.spec = config, spec
        self.action_space = space_from_description(spec.action_space)
        self.discrete = isinstance(self.action_space, spaces.Discrete)
        obs_shape = spec.obs_shape
        # images arrive channel-last from gymnasium envs; the conv trunk wants channel-first
        self.channels_last = len(obs_shape) == 3 and obs_shape[-1] in (1, 3, 4) and obs_shape[0] not in (1, 3, 4)
        net_shape = (obs_shape[-1], *obs_shape[:2]) if self.channels_last else obs_shape
        self.network: BCNetwork = self._build_network(net_shape)  # type: ignore[assignment]
        if not self.discrete:
            low, high = _finite_bounds(self.action_space)
            self.register_buffer("action_low", torch.as_tensor(low))
            self.register_buffer("action_high", torch.as_tensor(high))
        self.generator = torch.Generator()
        self._state: _ActingState | None = None

    # ------------------------------------------------------------------ construction
    def _build_network(self, obs_shape: tuple[int, ...]) -> nn.Module:
        cfg = self.config
        if self.discrete:
            action_dim, head = int(self.action_space.n), "categorical"
        elif isinstance(self.action_space, spaces.Box):
            action_dim = int(np.prod(self.action_space.shape))
            head = cfg.action_head if cfg.kind == "cvae" and cfg.action_head != "auto" else "mean"
        else:
            raise ConfigError(f"BC policies need a Box or Discrete action space, got {self.action_space}")
        if cfg.kind == "cvae":
            return CVAE(CVAEConfig(obs_shape, action_dim, head, cfg.chunk, cfg.latent_dim, list(cfg.hidden),
                                   cfg.prior, cfg.prior_components, cfg.conv_layers,
                                   cfg.image_features))
        if cfg.kind == "mdn":
            if self.discrete:
                raise ConfigError("policy=mdn is for Box actions; for Discrete actions use policy=mse (cross-entropy), "
                                  "whose categorical output is already multimodal, or policy=cvae")
            return mdn_network(obs_shape, action_dim, cfg.chunk, cfg.components, list(cfg.hidden), cfg.conv_layers,
                               cfg.image_features)
        return RegressionNet(obs_shape, make_action_head(head, action_dim, cfg.chunk), list(cfg.hidden),
                             cfg.conv_layers, cfg.image_features)

    @property
    def device(self) -> torch.device:
        return next(itertools.chain(self.parameters(), self.buffers())).device

    def seed(self, seed: int) -> None:
        """Seed the latent and action sampling (per-episode z, categorical and Gaussian noise)."""
        self.generator = torch.Generator(device=self.device).manual_seed(seed)
        self._state = None

    # ------------------------------------------------------------------ data
    def observations_to_tensor(self, obs: np.ndarray) -> torch.Tensor:
        """A batch of observations as the network wants them (uint8 images stay uint8, channel-first)."""
        tensor = torch.as_tensor(np.ascontiguousarray(obs))
        if self.channels_last:
            tensor = tensor.permute(0, 3, 1, 2)
        return tensor if tensor.dtype == torch.uint8 else tensor.float()

    def normalize_actions(self, actions: np.ndarray) -> torch.Tensor:
        if self.discrete:
            return torch.as_tensor(actions - int(self.action_space.start), dtype=torch.long)
        low, high = self.action_low.cpu(), self.action_high.cpu()
        flat = torch.as_tensor(actions, dtype=torch.float32).flatten(1)
        return (2.0 * (flat - low.flatten()) / (high - low).flatten() - 1.0).clamp(-1.0, 1.0)

    def unnormalize_actions(self, actions: torch.Tensor) -> np.ndarray:
        if self.discrete:
            return actions.cpu().numpy().astype(np.int64) + int(self.action_space.start)
        low, high = self.action_low.flatten(), self.action_high.flatten()
        scaled = low + (actions.clamp(-1.0, 1.0) + 1.0) * 0.5 * (high - low)
        return scaled.cpu().numpy().astype(self.action_space.dtype).reshape(-1, *self.action_space.shape)

    def training_data(self, demos: Demos) -> TrainingData:
        """Observations, action chunks ``a_{t:t+k}`` and their validity mask from ``demos``."""
        if tuple(demos.observations.shape[1:]) != self.spec.obs_shape:
            raise ObservationError(f"demo observations are {demos.observations.shape[1:]}, this policy takes "
                                   f"{self.spec.obs_shape}")
        steps, chunk = demos.num_steps, self.config.chunk
        index = np.arange(steps)[:, None] + np.arange(chunk)[None, :]
        inside = index < steps
        index = np.minimum(index, steps - 1)
        mask = inside & (demos.episode[index] == demos.episode[:, None])
        # past an episode's end repeat its last action; the mask keeps those steps out of the loss
        last = np.maximum.accumulate(np.where(mask, index, 0), axis=1)
        actions = self.normalize_actions(demos.actions)[torch.as_tensor(last)]
        return TrainingData(self.observations_to_tensor(demos.observations), actions,
                            torch.as_tensor(mask, dtype=torch.float32))

    # ------------------------------------------------------------------ acting
    def reset(self, n_envs: int = 1) -> None:
        """Forget the episode: new latent draw and empty ensembling buffers for ``n_envs`` envs."""
        self._state = _ActingState(
            noise=torch.zeros(n_envs, self.network.noise_dim, device=self.device),
            sums=torch.zeros(n_envs, self.config.chunk, self._point_dim, device=self.device),
            weights=torch.zeros(n_envs, self.config.chunk, device=self.device),
            params=torch.zeros(n_envs, self.config.chunk, self.network.head.num_params, device=self.device),
            steps=np.zeros(n_envs, dtype=np.int64),
        )

    @property
    def _point_dim(self) -> int:
        return int(self.action_space.n) if self.discrete else int(np.prod(self.action_space.shape))

    @torch.no_grad()
    def predict(
        self,
        observation: np.ndarray,
        state: Any = None,
        episode_start: np.ndarray | None = None,
        deterministic: bool = False,
    ) -> tuple[np.ndarray, Any]:
        """SB3-style: the action for one observation (or a batch of ``n_envs``), and ``state`` unchanged.

        The per-episode latent and the ensembling buffers live in the policy; ``episode_start``
        (SB3's flags, one per env) starts a new episode for those envs. Without flags, the first
        call after :meth:`reset` or :meth:`seed` starts one.
        """
        obs = np.asarray(observation)
        single = obs.shape == self.spec.obs_shape
        if not single and obs.shape[1:] != self.spec.obs_shape:
            raise ObservationError(f"this policy takes observations shaped {self.spec.obs_shape} (or a batch of them), "
                                   f"got {obs.shape}" + (f"; it was trained on {self.spec.obs_transform} of the env's "
                                                         "observations" if self.spec.obs_transform else ""))
        batch = obs[None] if single else obs
        n = batch.shape[0]
        fresh = self._state is None or len(self._state.steps) != n
        if fresh:
            self.reset(n)
        starts = np.ones(n, bool) if fresh else np.zeros(n, bool)
        if episode_start is not None:
            starts = starts | np.asarray(episode_start, dtype=bool).reshape(n)
        self.eval()
        action = self._act(self.observations_to_tensor(batch).to(self.device), starts, deterministic)
        return (action[0] if single else action), state

    def _act(self, obs: torch.Tensor, starts: np.ndarray, deterministic: bool) -> np.ndarray:
        state, cfg, head = self._state, self.config, self.network.head
        assert state is not None
        if starts.any():
            rows = torch.as_tensor(np.flatnonzero(starts), device=self.device)
            state.sums[rows], state.weights[rows] = 0.0, 0.0
            state.steps[starts] = 0
        chunk_start = state.steps % cfg.chunk == 0
        redraw = starts | (chunk_start if cfg.z_sample == "chunk" else False)
        if redraw.any():
            rows = torch.as_tensor(np.flatnonzero(redraw), device=self.device)
            draw = torch.randn(len(rows), state.noise.shape[1], generator=self.generator, device=self.device)
            state.noise[rows] = draw
        # ensembling predicts every step; open-loop execution only at the start of each chunk
        plan = np.ones_like(chunk_start) if cfg.temporal_ensemble else chunk_start
        if plan.any():
            rows = torch.as_tensor(np.flatnonzero(plan), device=self.device)
            noise = None if cfg.z_sample == "mean" else state.noise[rows]
            params = self.network.action_params(obs[rows], noise)
            point = head.point(params, deterministic, self.generator)  # (rows, chunk, point_dim)
            # the prediction made now for step t + j is the (chunk - 1 - j)-th oldest one for that step
            age = (cfg.chunk - 1 - torch.arange(cfg.chunk, device=self.device)).float()
            weights = torch.exp(-cfg.ensemble_decay * age) if cfg.temporal_ensemble else torch.ones_like(age)
            state.sums[rows] += weights[None, :, None] * point
            state.weights[rows] += weights[None, :]
            state.params[rows] = params
        current = state.sums[:, 0] / state.weights[:, 0, None]
        action = head.act(current, state.params[:, 0], deterministic, self.generator)
        for buffer in (state.sums, state.weights, state.params):
            buffer.copy_(torch.roll(buffer, -1, dims=1))
            buffer[:, -1] = 0.0
        state.steps += 1
        return self.unnormalize_actions(action)

    def describe(self) -> dict[str, Any]:
        return {"config": asdict(self.config), "spec": asdict(self.spec),
                "parameters": sum(p.numel() for p in self.parameters())}


def _finite_bounds(space: spaces.Box) -> tuple[np.ndarray, np.ndarray]:
    """Bounds used to scale Box actions to [-1, 1]; unbounded dimensions are taken as [-1, 1] as they are."""
    low = np.where(np.isfinite(space.low), space.low, -1.0).astype(np.float32)
    high = np.where(np.isfinite(space.high), space.high, 1.0).astype(np.float32)
    return low, high


def build_policy(config: BCPolicyConfig, demos: Demos, device: str | torch.device = "cpu") -> BCPolicy:
    """A fresh policy for ``demos`` (spaces, observation shape and transform taken from the file)."""
    describe_space(demos.action_space)
    return BCPolicy(config, PolicyEnvSpec.from_demos(demos)).to(device)
