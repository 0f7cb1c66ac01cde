"""BC policy checkpoints: safetensors weights plus JSON metadata (policy config, env id and spaces).

Nothing in a checkpoint is executable, so loading one from elsewhere cannot run code. Loading
with an ``env`` checks that the policy was trained for that env's spaces (and id, when both are
known) before any weights are used.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

import gymnasium as gym
import torch

from agents.bc.policy import BCPolicy, BCPolicyConfig, PolicyEnvSpec
from vaerl.config import from_dict
from vaerl.data.demos import space_mismatch
from vaerl.errors import CheckpointError, ConfigError, DatasetError
from vaerl.tensorfile import load_state_strict, load_tensor_file, save_tensor_file

FORMAT = "vaerl-bc-policy"
FORMAT_VERSION = 1
_FIX = "train one with `python scripts/train_bc.py demos=<file>` and pass its policy.safetensors"


def save_policy(policy: BCPolicy, path: str | Path, extra: dict[str, Any] | None = None) -> Path:
    """Write ``policy`` to ``path`` (``.safetensors``) atomically."""
    return save_tensor_file(path, policy.state_dict(), kind=FORMAT, version=FORMAT_VERSION,
                            policy_config=asdict(policy.config), env_spec=asdict(policy.spec), extra=extra or {})


def load_policy(path: str | Path, env: gym.Env | None = None, device: str | torch.device = "cpu") -> BCPolicy:
    """Rebuild the policy stored at ``path``; with ``env``, refuse one trained for another env."""
    state, metadata = load_tensor_file(path, kind=FORMAT, version=FORMAT_VERSION, what="BC policy", fix=_FIX)
    try:
        config = from_dict(BCPolicyConfig, metadata["policy_config"])
        spec = PolicyEnvSpec(**metadata["env_spec"])
    except (KeyError, TypeError, ConfigError) as exc:
        raise CheckpointError(f"{path} has damaged metadata ({exc}); train the policy again") from exc
    if env is not None:
        check_policy_env(spec, env, path)
    try:
        policy = BCPolicy(config, spec)
    except (ValueError, DatasetError) as exc:
        raise CheckpointError(f"{path} does not match the policy its metadata describes ({exc}): the file is "
                              "corrupt") from exc
    load_state_strict(policy, state, path, "BC policy")
    return policy.to(device).eval()


def check_policy_env(spec: PolicyEnvSpec, env: gym.Env, path: str | Path = "the policy") -> None:
    """Raise :class:`CheckpointError` when ``env`` is not the env (spaces, id) the policy was trained for."""
    env_id = env.spec.id if env.spec is not None else None
    problems = [p for p in (space_mismatch("the observation space", spec.observation_space, env.observation_space),
                            space_mismatch("the action space", spec.action_space, env.action_space)) if p]
    if spec.env_id and env_id and spec.env_id != env_id:
        problems.insert(0, f"it was trained in {spec.env_id}, this env is {env_id}")
    if problems:
        raise CheckpointError(f"{path} is a policy for another env: {'; '.join(problems)}. Train a policy on "
                              "demonstrations from this env")
