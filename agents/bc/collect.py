"""``scripts/collect_demos.py``: record an expert's demonstrations into a demo file or a Minari dataset."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from agents.bc.experts import make_expert
from vaerl.data.demos import (
    ENCODER_PREFIX,
    Demos,
    encoder_digest,
    obs_transform_from_name,
    record_demos,
    save_demos,
)
from vaerl.data.demos.minari import dataset_path, save_minari
from vaerl.envs import EnvConfig, make_env
from vaerl.errors import ConfigError

log = logging.getLogger(__name__)

FORMATS = ("npz", "minari")


@dataclass
class CollectDemosConfig:
    """``scripts/collect_demos.py``: record demonstrations of an expert into a demo file or a Minari dataset."""

    env: EnvConfig = field(default_factory=EnvConfig)
    """Which env to record in (``kind: gym`` for vaerl/Obstacle-v0 and other non-Atari envs)."""
    expert: str = "scripted"
    """``scripted`` (the env's own expert) or the path of a saved Stable-Baselines3 agent."""
    expert_algo: str = "PPO"
    """SB3 algorithm of a saved agent."""
    deterministic: bool = True
    """Let an SB3 expert act deterministically."""
    episodes: int = 200
    seed: int = 0
    format: str = "npz"
    """``npz`` (vaerl's demo file at ``out``) or ``minari`` (the Minari dataset ``dataset_id``)."""
    out: str = "demos.npz"
    dataset_id: str | None = None
    """Minari dataset id, ``(namespace/)name-v<version>``: train on it with ``demos=minari:<id>``;
    null: ``vaerl/<env name>-<episodes>ep-seed<seed>-v0``."""
    overwrite: bool = False
    encoder: str | None = None
    """Path of a vaerl encoder: store its latents instead of raw observations."""
    device: str = "auto"


def collect_demos(config: CollectDemosConfig) -> Path:
    """Record ``config.episodes`` expert episodes and write them; returns the file or dataset folder."""
    if config.format not in FORMATS:
        raise ConfigError(f"format must be one of {FORMATS}, got {config.format!r}")
    dataset_id = config.dataset_id or f"vaerl/{config.env.name}-{config.episodes}ep-seed{config.seed}-v0"
    if config.format == "minari":
        target = dataset_path(dataset_id)
        if target.exists() and not config.overwrite:
            raise ConfigError(f"a Minari dataset {dataset_id} exists at {target}; pass overwrite=true to "
                              "replace it or choose another dataset_id=")
    else:
        target = Path(config.out)
        if target.suffix != ".npz":
            raise ConfigError(f"out must end in .npz, got {target}")
        if target.exists() and not config.overwrite:
            raise ConfigError(f"{target} exists; pass overwrite=true to replace it or choose another out=")
    demos = record_expert(config)
    if config.format == "minari":
        save_minari(demos, dataset_id, overwrite=config.overwrite)
        where = f"{target} (train with demos=minari:{dataset_id})"
    else:
        save_demos(demos, target)
        where = str(target)
    success = demos.episode_info.get("is_success")
    log.info("recorded %d episodes (%d steps)%s -> %s", demos.num_episodes, demos.num_steps,
             f", success rate {success.mean():.2f}" if success is not None else "", where)
    return target


def record_expert(config: CollectDemosConfig) -> Demos:
    """The demonstrations ``config`` describes, in memory."""
    env = make_env(config.env, seed=config.seed)
    try:
        policy, expert_name = make_expert(config.expert, env, config.seed, config.expert_algo, config.device)
        transform_name = f"{ENCODER_PREFIX}{config.encoder}" if config.encoder else None
        transform = obs_transform_from_name(transform_name, config.device)
        return record_demos(env, policy, config.episodes, config.seed, deterministic=config.deterministic,
                            obs_transform=transform, transform_name=transform_name,
                            encoder_digest=encoder_digest(config.encoder) if config.encoder else None,
                            expert=expert_name, env_config=config.env.to_dict())
    finally:
        env.close()
