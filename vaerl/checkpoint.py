"""Encoder checkpoints: safetensors weights plus plain-JSON metadata describing the model and its input.

Nothing in a checkpoint is executable: weights are safetensors and the metadata is JSON, so
loading a file from elsewhere cannot run code. A checkpoint records the model kind and its config,
the :class:`PreprocessSpec` the encoder expects, the env it was trained on and the vaerl version.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

import vaerl
from vaerl.errors import CheckpointError
from vaerl.models import FrameModel, build_model, model_class
from vaerl.preprocessing import PreprocessSpec
from vaerl.tensorfile import load_state_strict, load_tensor_file, read_tensor_metadata, save_tensor_file

FORMAT = "vaerl-encoder"
CHECKPOINT_FILE = "encoder.safetensors"
"""The checkpoint's name inside a run directory."""
FORMAT_VERSION = 1
_WHAT = "encoder checkpoint"
_FIX = "pretrain one with `python scripts/pretrain_vae.py env=<Env>` or pass an existing encoder.safetensors"


@dataclass(frozen=True)
class CheckpointInfo:
    kind: str
    model_config: dict[str, Any]
    spec: PreprocessSpec
    env: dict[str, Any]
    vaerl_version: str
    format_version: int
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def env_id(self) -> str | None:
        return self.env.get("id")


def save_checkpoint(
    path: str | Path,
    model: FrameModel,
    spec: PreprocessSpec,
    env: dict[str, Any],
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write ``model`` and its metadata to ``path`` atomically."""
    return save_tensor_file(path, model.state_dict(), kind=FORMAT, version=FORMAT_VERSION, model_kind=model.kind,
                            model_config=model.config_dict(), preprocess=spec.to_dict(), env=env, extra=extra or {})


def read_checkpoint_info(path: str | Path) -> CheckpointInfo:
    """Read a checkpoint's metadata (file or run directory) without loading its weights."""
    path = checkpoint_file(path)
    return _info(path, read_tensor_metadata(path, kind=FORMAT, version=FORMAT_VERSION, what=_WHAT, fix=_FIX))


def load_model(path: str | Path, device: str | torch.device = "cpu", kind: str | None = None) -> tuple[FrameModel, CheckpointInfo]:
    """Rebuild the model stored at ``path`` (a file or a run directory) in eval mode on ``device``.

    ``kind`` asserts the model family.
    """
    path = checkpoint_file(path)
    state, metadata = load_tensor_file(path, kind=FORMAT, version=FORMAT_VERSION, what=_WHAT, fix=_FIX)
    info = _info(path, metadata)
    if kind is not None and info.kind != kind:
        raise CheckpointError(f"{path} holds a {info.kind!r} model, not the requested {kind!r}")
    cls = model_class(info.kind)
    try:
        model = build_model(info.kind, **cls.stored_config(info.model_config))
    except Exception as exc:  # a config this vaerl cannot build
        raise CheckpointError(f"cannot rebuild the {info.kind} model of {path} ({exc}); it was written by vaerl "
                              f"{info.vaerl_version}, this is {vaerl.__version__}") from exc
    load_state_strict(model, state, path, info.kind)
    return model.to(device).eval(), info


def checkpoint_file(path: str | Path) -> Path:
    """The checkpoint file of ``path``, which names the file itself or a run directory holding it."""
    path = Path(path)
    return path / CHECKPOINT_FILE if path.is_dir() else path


def _info(path: Path, metadata: dict[str, Any]) -> CheckpointInfo:
    try:
        return CheckpointInfo(
            kind=metadata["model_kind"],
            model_config=metadata["model_config"],
            spec=PreprocessSpec.from_dict(metadata["preprocess"]),
            env=metadata["env"],
            vaerl_version=metadata["vaerl_version"],
            format_version=metadata["format_version"],
            extra=metadata.get("extra", {}),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{path} has damaged metadata ({exc!r}); restore it or pretrain again") from exc
