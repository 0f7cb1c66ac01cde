"""Stable-Baselines3 agents and replay buffers loaded without running pickled code.

An SB3 zip keeps its tensors as ``.pth`` files (read with ``weights_only=True`` since SB3 2.8) and its other
attributes as JSON, except those JSON cannot hold (spaces, schedules, the policy class, numpy arrays, deques),
which it pickles with cloudpickle. ``BaseAlgorithm.load`` unpickles those, and a replay buffer is one pickle,
so a crafted file could run any code when it is opened. Here every pickle goes through an unpickler that only
resolves what an agent's attributes are made of (numpy arrays, scalars and random generators, deques,
gymnasium spaces, SB3 policies, buffers, noise and schedules, torch modules and optimizers) and refuses every
other global, functions pickled by value included. The results reach ``load`` as ``custom_objects``, so SB3
itself unpickles nothing.
"""

from __future__ import annotations

import base64
import importlib
import io
import json
import pickle
import zipfile
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import gymnasium as gym
import numpy as np
import torch
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.buffers import BaseBuffer, ReplayBuffer
from stable_baselines3.common.noise import ActionNoise
from stable_baselines3.common.off_policy_algorithm import OffPolicyAlgorithm
from stable_baselines3.common.policies import BasePolicy
from stable_baselines3.common.type_aliases import TrainFreq, TrainFrequencyUnit
from stable_baselines3.common.utils import ConstantSchedule, FloatSchedule, LinearSchedule, get_device
from stable_baselines3.her import HerReplayBuffer
from stable_baselines3.her.goal_selection_strategy import GoalSelectionStrategy

from vaerl.errors import CheckpointError

Algorithm = TypeVar("Algorithm", bound=BaseAlgorithm)

# the functions numpy and the standard library pickle arrays, scalars, dtypes, random generators and deques with
# (numpy's scalar types, ``numpy.float32`` and the like, are resolved as well)
_FUNCTIONS = {
    ("numpy", "dtype"), ("numpy", "ndarray"),
    *((core, name) for core in ("numpy.core.multiarray", "numpy._core.multiarray") for name in ("_reconstruct", "scalar")),
    ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),
    ("numpy.random._pickle", "__generator_ctor"), ("numpy.random._pickle", "__bit_generator_ctor"),
    ("numpy.random._pickle", "__randomstate_ctor"), ("numpy.random.bit_generator", "__pyx_unpickle_SeedSequence"),
    ("numpy.random.bit_generator", "SeedSequence"), ("numpy.random.bit_generator", "SeedlessSeedSequence"),
    ("numpy.random._pcg64", "PCG64"), ("numpy.random._pcg64", "PCG64DXSM"), ("numpy.random._mt19937", "MT19937"),
    ("numpy.random._philox", "Philox"), ("numpy.random._sfc64", "SFC64"),
    ("collections", "deque"), ("collections", "OrderedDict"), ("torch", "device"),
}
# classes are resolved by what they are, and only from these modules (policy_kwargs name torch activations and
# optimizers, and features extractors of agents/ or vaerl/)
_CLASS_MODULES = ("gymnasium.spaces", "stable_baselines3", "torch.nn.modules", "torch.optim", "agents", "vaerl")
_CLASS_KINDS = (gym.spaces.Space, BasePolicy, BaseBuffer, ActionNoise, torch.nn.Module, torch.optim.Optimizer,
                FloatSchedule, LinearSchedule, ConstantSchedule, TrainFreq, TrainFrequencyUnit, GoalSelectionStrategy)
# what an agent that only acts does without, should its file pickle them as code (SB3 before 2.7 pickled
# schedules as closures): how it learned and where its last rollout stopped
_ACTING_STAND_INS: dict[str, Any] = {
    "learning_rate": 0.0, "lr_schedule": None, "clip_range": 0.0, "clip_range_vf": None,
    "exploration_schedule": None, "action_noise": None, "_last_obs": None, "_last_original_obs": None,
    "_last_episode_starts": None, "ep_info_buffer": None, "ep_success_buffer": None,
}


# what a pickle of the wrong shape or from another SB3 version raises while it is rebuilt
_UNREADABLE = (pickle.UnpicklingError, EOFError, AttributeError, TypeError, ValueError)


class RefusedGlobal(pickle.UnpicklingError):
    """A pickle names something that is not plain agent data: loading it could run code."""


def _in_class_modules(module: str) -> bool:
    return any(module == prefix or module.startswith(prefix + ".") for prefix in _CLASS_MODULES)


class _AgentUnpickler(pickle._Unpickler):  # the Python unpickler, so that BUILD can be checked
    dispatch: ClassVar[dict] = dict(pickle._Unpickler.dispatch)

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _FUNCTIONS:
            return super().find_class(module, name)
        scalar_type = getattr(np, name, None) if module == "numpy" else None
        if isinstance(scalar_type, type) and issubclass(scalar_type, np.generic):
            return scalar_type
        if _in_class_modules(module) and "." not in name:
            try:
                found = getattr(importlib.import_module(module), name, None)
            except ImportError:
                found = None
            if isinstance(found, type) and issubclass(found, _CLASS_KINDS) and _in_class_modules(found.__module__):
                return found
        raise RefusedGlobal(f"{module}.{name}")

    def load_build(self) -> None:
        instance, state = self.stack[-2], self.stack[-1]
        # a dtype's state must be the one numpy gives it: an object dtype whose flags say "no objects" would make
        # numpy read raw bytes of the file as object pointers
        if isinstance(instance, np.dtype) and state != instance.__reduce__()[2]:
            raise RefusedGlobal(f"numpy.dtype {instance} with an altered state {state!r}")
        super().load_build()

    dispatch[pickle.BUILD[0]] = load_build


def unpickle_agent_data(data: bytes) -> Any:
    """Unpickle ``data`` made of agent attributes only; raises :class:`RefusedGlobal` for anything else."""
    return _AgentUnpickler(io.BytesIO(data)).load()


def _refusal(path: Path, what: str, refused: RefusedGlobal) -> CheckpointError:
    if str(refused).startswith("cloudpickle."):  # a function or class pickled by value, as SB3 < 2.7 did schedules
        fix = ("it is code pickled by value (Stable-Baselines3 before 2.7 saved schedules so): if you trust the file, "
               "load it with Stable-Baselines3 itself and save it again with version 2.8 or later")
    else:
        fix = ("vaerl reads only numpy arrays, gymnasium spaces, SB3 classes, torch modules and optimizers and the "
               "features extractors of agents/ and vaerl/ from it")
    return CheckpointError(f"{path}: {what} pickles {refused}, which vaerl does not unpickle because it could run "
                           f"code; {fix}")


def _pickled_attributes(path: Path) -> dict[str, bytes]:
    try:
        with zipfile.ZipFile(path) as archive:
            data = json.loads(archive.read("data"))
    except (zipfile.BadZipFile, KeyError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{path} is not a Stable-Baselines3 agent ({exc}); give the .zip that SB3's "
                              "save wrote") from exc
    try:
        return {key: base64.b64decode(value[":serialized:"], validate=True) for key, value in data.items()
                if isinstance(value, dict) and ":serialized:" in value}
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"{path}: a pickled attribute is not base64 ({exc}); the file is damaged") from exc


def load_algorithm(algorithm: type[Algorithm], path: str | Path, *, acting_only: bool = False,
                   **kwargs: Any) -> Algorithm:
    """``algorithm.load(path, **kwargs)`` with every pickled attribute unpickled safely first.

    ``acting_only``: the agent will only act (play, evaluate, record), so attributes pickled as code that acting
    does not need (schedules, the last rollout's state) get neutral stand-ins instead of an error.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no agent at {path}: give the .zip that `python scripts/train_agent.py` or SB3's save wrote")
    custom_objects: dict[str, Any] = {}
    for key, data in _pickled_attributes(path).items():
        try:
            custom_objects[key] = unpickle_agent_data(data)
        except RefusedGlobal as refused:
            if not (acting_only and key in _ACTING_STAND_INS):
                raise _refusal(path, f"its attribute {key!r}", refused) from None
            custom_objects[key] = _ACTING_STAND_INS[key]
        except _UNREADABLE as exc:
            raise CheckpointError(f"{path}: its attribute {key!r} cannot be rebuilt ({type(exc).__name__}: {exc}): the "
                                  "file is damaged or was saved by another Stable-Baselines3 version") from exc
    return algorithm.load(path, custom_objects=custom_objects, **kwargs)


def load_replay_buffer(model: OffPolicyAlgorithm, path: str | Path) -> None:
    """``model.load_replay_buffer(path)`` through the safe unpickler (SB3 saves the buffer as one pickle)."""
    path = Path(path)
    try:
        buffer = unpickle_agent_data(path.read_bytes())
    except RefusedGlobal as refused:
        raise _refusal(path, "the replay buffer", refused) from None
    except _UNREADABLE as exc:
        raise CheckpointError(f"{path} cannot be read as a replay buffer ({exc}); delete it to resume without "
                              "the buffer") from exc
    if not isinstance(buffer, ReplayBuffer):
        raise CheckpointError(f"{path} holds a {type(buffer).__name__}, not a replay buffer")
    buffer.device = get_device(model.device)  # as SB3's load_replay_buffer: the device of this run
    if isinstance(buffer, HerReplayBuffer):  # as SB3: HER samples goals through the env its pickle leaves out
        buffer.set_env(model.get_env())
        buffer.truncate_last_trajectory()
    model.replay_buffer = buffer
