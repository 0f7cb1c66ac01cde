"""Encoder checkpoints: safetensors weights plus plain-JSON metadata describing the model and its input.

Nothing in a checkpoint is executable: weights are safetensors and the metadata is JSON, so
loading a file from elsewhere cannot run code. A checkpoint records the model kind and its config,
the :class:`PreprocessSpec` the encoder expects, the env it was trained on and the vaerl version.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, safe_open, save_file

import vaerl
from vaerl.errors import CheckpointError
from vaerl.io import atomic_path
from vaerl.models import FrameModel, build_model, model_class
from vaerl.preprocessing import PreprocessSpec

FORMAT = "vaerl-encoder"
FORMAT_VERSION = 1


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
    metadata = {
        "format": FORMAT,
        "format_version": str(FORMAT_VERSION),
        "vaerl_version": vaerl.__version__,
        "model_kind": model.kind,
        "model_config": json.dumps(model.config_dict()),
        "preprocess": json.dumps(spec.to_dict()),
        "env": json.dumps(env, default=str),
        "extra": json.dumps(extra or {}, default=float),
    }
    # safetensors refuses shared or non-contiguous storage: store plain contiguous copies
    tensors = {k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)
    return Path(path)


def read_checkpoint_info(path: str | Path) -> CheckpointInfo:
    """Read a checkpoint's metadata without loading its weights."""
    path = _existing(path)
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{path} is truncated or corrupt ({exc}); restore it or pretrain again") from exc
    return _parse_metadata(path, metadata)


def load_model(path: str | Path, device: str | torch.device = "cpu", kind: str | None = None) -> tuple[FrameModel, CheckpointInfo]:
    """Rebuild the model stored at ``path`` (a file or a run directory) in eval mode on ``device``.

    ``kind`` asserts the model family.
    """
    path = _existing(path)
    info = read_checkpoint_info(path)
    if kind is not None and info.kind != kind:
        raise CheckpointError(f"{path} holds a {info.kind!r} model, not the requested {kind!r}")
    model_class(info.kind)
    try:
        model = build_model(info.kind, **info.model_config)
    except Exception as exc:  # a config this vaerl cannot build
        raise CheckpointError(f"cannot rebuild the {info.kind} model of {path} ({exc}); it was written by vaerl "
                              f"{info.vaerl_version}, this is {vaerl.__version__}") from exc
    try:
        state = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{path} is truncated or corrupt ({exc}); restore it or pretrain again") from exc
    missing, unexpected = _compare_keys(model.state_dict(), state)
    if missing or unexpected:
        raise CheckpointError(f"{path} does not match the {info.kind} architecture in its own metadata "
                              f"(missing {missing[:3]}, unexpected {unexpected[:3]}): the file is corrupt")
    model.load_state_dict(state)
    return model.to(device).eval(), info


def _existing(path: str | Path) -> Path:
    path = Path(path)
    if path.is_dir():
        path = path / "encoder.safetensors"
    if not path.exists():
        raise CheckpointError(f"no checkpoint at {path}: pretrain one with `python scripts/pretrain_vae.py env=<Env>` "
                              "or pass the path of an existing encoder.safetensors")
    return path


def _parse_metadata(path: Path, metadata: dict[str, str]) -> CheckpointInfo:
    if metadata.get("format") != FORMAT:
        raise CheckpointError(f"{path} is a safetensors file but not a vaerl encoder checkpoint")
    version = int(metadata.get("format_version", "0"))
    if version > FORMAT_VERSION:
        raise CheckpointError(f"{path} uses checkpoint format {version}, written by vaerl {metadata.get('vaerl_version')};"
                              f" this vaerl {vaerl.__version__} reads up to format {FORMAT_VERSION}: upgrade vaerl")
    try:
        return CheckpointInfo(
            kind=metadata["model_kind"],
            model_config=json.loads(metadata["model_config"]),
            spec=PreprocessSpec.from_dict(json.loads(metadata["preprocess"])),
            env=json.loads(metadata["env"]),
            vaerl_version=metadata["vaerl_version"],
            format_version=version,
            extra=json.loads(metadata.get("extra", "{}")),
        )
    except (KeyError, json.JSONDecodeError, TypeError) as exc:
        raise CheckpointError(f"{path} has damaged metadata ({exc!r}); restore it or pretrain again") from exc


def _compare_keys(expected: dict[str, torch.Tensor], found: dict[str, torch.Tensor]) -> tuple[list[str], list[str]]:
    missing = sorted(set(expected) - set(found))
    unexpected = sorted(set(found) - set(expected))
    wrong_shape = sorted(k for k in set(expected) & set(found) if expected[k].shape != found[k].shape)
    return missing + wrong_shape, unexpected
