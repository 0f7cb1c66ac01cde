"""Record demonstrations: run an expert through :func:`vaerl.rollout.run_episodes` and keep what it did.

Observations are stored raw, or as the latents of a vaerl encoder (``encoder:<path>``), in which
case the file also keeps a digest of that encoder's checkpoint: a policy trained on the latents
must see the same encoder's latents at test time, and a different encoder is refused by name.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from vaerl.data.demos.file import DemoMetadata, Demos
from vaerl.data.demos.spaces import describe_space
from vaerl.envs import EnvConfig
from vaerl.errors import ConfigError, DatasetError, ObservationError
from vaerl.rollout import ObsTransform, PredictPolicy, run_episodes

ENCODER_PREFIX = "encoder:"
DEFAULT_EPISODE_INFO_KEYS = ("is_success",)
"""Final-info keys every env may report (Stable-Baselines3's convention); envs add their own."""


def episode_info_keys(env: gym.Env) -> tuple[str, ...]:
    """The final-info keys worth keeping per episode: ``is_success`` plus the env's ``episode_info_keys``."""
    own = tuple(getattr(env.unwrapped, "episode_info_keys", ()))
    return DEFAULT_EPISODE_INFO_KEYS + tuple(key for key in own if key not in DEFAULT_EPISODE_INFO_KEYS)


def record_demos(
    env: gym.Env,
    policy: PredictPolicy,
    episodes: int,
    seed: int,
    *,
    deterministic: bool = True,
    obs_transform: ObsTransform | None = None,
    transform_name: str | None = None,
    encoder_digest: str | None = None,
    expert: str = "",
    env_config: dict[str, Any] | None = None,
    info_keys: Sequence[str] | None = None,
) -> Demos:
    """Run ``policy`` for ``episodes`` episodes in ``env`` and return what it did.

    The env is reset with ``seed`` once (later resets continue its generator) and its action space
    is seeded with it, so a seeded policy gives the same demonstrations every time. The policy acts
    on raw observations; with an ``obs_transform`` the transformed ones are stored (see
    :func:`encoder_obs_transform`) and ``transform_name`` records which transform it was.
    Final-info values of ``info_keys`` (default: :func:`episode_info_keys`) reported by every
    episode are kept per episode.
    """
    if obs_transform is not None and not transform_name:
        raise ConfigError("give transform_name with obs_transform, so the file says what its observations are")
    describe_space(env.action_space), describe_space(env.observation_space)  # fail early on Dict/Tuple spaces
    keep = obs_transform or np.asarray
    runs = list(run_episodes(env, policy, episodes, seed, deterministic=deterministic, keep=keep))
    finals = [run.final_info for run in runs]
    keys = episode_info_keys(env) if info_keys is None else tuple(info_keys)
    episode_info = {key: np.array([float(f[key]) for f in finals]) for key in keys if all(key in f for f in finals)}
    obs_array = np.stack([obs for run in runs for obs in run.observations])
    action_dtype = np.int64 if isinstance(env.action_space, spaces.Discrete) else np.float32
    metadata = DemoMetadata(
        env_id=env.spec.id if env.spec is not None else None,
        observation_space=describe_space(env.observation_space),
        action_space=describe_space(env.action_space),
        episodes=episodes,
        steps=len(obs_array),
        stored_obs_shape=obs_array.shape[1:],
        stored_obs_dtype=str(obs_array.dtype),
        obs_transform=transform_name if obs_transform is not None else None,
        encoder_digest=encoder_digest if obs_transform is not None else None,
        env_config=env_config if env_config is not None else env_config_of(env),
        expert=expert,
        seed=seed,
    )
    return Demos(
        observations=obs_array,
        actions=np.asarray([a for run in runs for a in run.actions], dtype=action_dtype),
        rewards=np.asarray([r for run in runs for r in run.rewards], np.float32),
        episode=np.repeat(np.arange(episodes, dtype=np.int64), [run.length for run in runs]),
        terminated=np.asarray([run.terminated for run in runs], bool),
        episode_info=episode_info,
        metadata=metadata,
        final_observations=np.stack([run.final_observation for run in runs]),
    )


def env_config_of(env: gym.Env) -> dict[str, Any] | None:
    """An :class:`EnvConfig` that rebuilds a ``gym.make``'d env with the same keyword arguments."""
    if env.spec is None:
        return None
    kwargs = {k: v for k, v in env.spec.kwargs.items() if k != "render_mode"}
    return EnvConfig(name=env.spec.id, id=env.spec.id, kind="gym", kwargs=kwargs,
                     max_episode_steps=env.spec.max_episode_steps).to_dict()


# ---------------------------------------------------------------------------------------------- encoders
def encoder_obs_transform(encoder: Any) -> ObsTransform:
    """Turn a vaerl :class:`~vaerl.encoder.Encoder` into an :data:`ObsTransform` (raw obs -> float32 latent)."""
    def transform(obs: np.ndarray) -> np.ndarray:
        return encoder.encode(np.asarray(obs)[None])[0].detach().cpu().numpy().astype(np.float32)

    return transform


def encoder_path(name: str | None) -> str | None:
    """The checkpoint path in an ``encoder:<path>`` transform name (``None`` for raw observations)."""
    if name is None:
        return None
    if not name.startswith(ENCODER_PREFIX):
        raise DatasetError(f"unknown observation transform {name!r}: vaerl only knows '{ENCODER_PREFIX}<path>'")
    return name[len(ENCODER_PREFIX):]


def obs_transform_from_name(name: str | None, device: str = "auto") -> ObsTransform | None:
    """Rebuild the transform a demo file (or a policy checkpoint) names: ``None`` or ``encoder:<path>``."""
    path = encoder_path(name)
    if path is None:
        return None
    from vaerl.encoder import load_encoder

    return encoder_obs_transform(load_encoder(path, device=device))


def encoder_digest(path: str | Path) -> str:
    """Content digest of an encoder checkpoint (a file or a run directory holding one)."""
    from vaerl.checkpoint import checkpoint_file

    file = checkpoint_file(path)
    if not file.is_file():
        raise ConfigError(f"no encoder checkpoint at {path}: pretrain one with scripts/pretrain_vae.py")
    digest = hashlib.sha256()
    with open(file, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:16]


def encode_demos(demos: Demos, encoder: str | Path, device: str = "auto", batch_size: int = 256) -> Demos:
    """Demonstrations of raw frames turned into the latents of ``encoder`` (its saved preprocessing applied)."""
    from vaerl.encoder import load_encoder

    if demos.metadata.obs_transform is not None:
        raise DatasetError(f"these demonstrations already hold {demos.metadata.obs_transform} latents")
    loaded = load_encoder(encoder, device=device)
    space = demos.observation_space
    try:
        loaded.spec.check_space(space)
    except ObservationError as exc:
        raise DatasetError(f"the demonstrations' observations ({space}) do not fit the encoder {encoder}: {exc}") from exc

    def encode(frames: np.ndarray) -> np.ndarray:
        parts = [loaded.encode(frames[i:i + batch_size]).cpu().numpy() for i in range(0, len(frames), batch_size)]
        return np.concatenate(parts).astype(np.float32)

    latents = encode(demos.observations)
    finals = encode(demos.final_observations) if demos.final_observations is not None else None
    metadata = replace(demos.metadata, stored_obs_shape=latents.shape[1:], stored_obs_dtype=str(latents.dtype),
                       obs_transform=f"{ENCODER_PREFIX}{encoder}", encoder_digest=encoder_digest(encoder))
    return replace(demos, observations=latents, final_observations=finals, metadata=metadata)


def demo_encoder(demos: Demos, encoder: str | None) -> str | None:
    """The encoder whose latents a policy trained on ``demos`` observes, checked against the file.

    ``encoder`` (optional) is the one the caller names: with demonstrations of raw frames it is
    the encoder to encode them with; with stored latents it must be the encoder they came from
    (same checkpoint content), else :class:`DatasetError` before anything is trained.
    """
    recorded, digest = encoder_path(demos.metadata.obs_transform), demos.metadata.encoder_digest
    if recorded is None:
        return encoder
    if encoder is None:
        if not Path(recorded).exists():
            raise DatasetError(f"the demonstrations hold latents of the encoder {recorded}, which is not there: pass "
                               "encoder=<path> to that checkpoint")
        if digest is not None and encoder_digest(recorded) != digest:
            raise DatasetError(f"the encoder at {recorded} changed since the demonstrations were recorded with it: "
                               "record them again, or pass encoder=<path> to the checkpoint they came from")
        return recorded
    same = (encoder_digest(encoder) == digest if digest is not None
            else Path(encoder).resolve() == Path(recorded).resolve())
    if not same:
        raise DatasetError(f"the demonstrations hold latents of the encoder {recorded}, not of {encoder}: pass "
                           f"encoder={recorded}, or record them again with encoder={encoder} (or record raw frames, "
                           "which any encoder= encodes at training time)")
    return encoder
