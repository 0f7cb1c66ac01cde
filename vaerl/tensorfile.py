"""Self-describing tensor files: safetensors weights plus JSON metadata, written atomically.

Every file vaerl saves with weights in it (encoders, PixelCNN priors, behaviour-cloning policies)
goes through here, so they share one format check, one version check and one set of error
messages. Nothing in such a file is executable: loading one cannot run code.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, safe_open, save_file

import vaerl
from vaerl.errors import CheckpointError
from vaerl.io import atomic_path

_RESERVED = ("format", "format_version", "vaerl_version")


def save_tensor_file(path: str | Path, tensors: Mapping[str, torch.Tensor], *, kind: str, version: int,
                     **metadata: Any) -> Path:
    """Write ``tensors`` and JSON-encoded ``metadata`` to ``path`` atomically, tagged with ``kind`` and ``version``."""
    header = {"format": kind, "format_version": str(version), "vaerl_version": vaerl.__version__}
    header.update({key: json.dumps(value, default=_plain) for key, value in metadata.items()})
    # safetensors refuses shared or non-contiguous storage: store plain contiguous copies
    plain = {key: value.detach().cpu().contiguous().clone() for key, value in tensors.items()}
    with atomic_path(path) as tmp:
        save_file(plain, str(tmp), metadata=header)
    return Path(path)


def read_tensor_metadata(path: str | Path, *, kind: str, version: int, what: str, fix: str) -> dict[str, Any]:
    """The decoded metadata of a file written by :func:`save_tensor_file`, checked against ``kind``/``version``.

    ``what`` names the file in messages ("encoder checkpoint") and ``fix`` says how to get a good one.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no {what} at {path}: {fix}")
    try:
        with safe_open(str(path), framework="pt") as handle:
            raw = handle.metadata() or {}
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{path} is truncated or corrupt ({exc}); {fix}") from exc
    if raw.get("format") != kind:
        raise CheckpointError(f"{path} is not a vaerl {what} (its format is {raw.get('format')!r})")
    found = int(raw.get("format_version", "0"))
    if found > version:
        raise CheckpointError(f"{path} uses {what} format {found}, written by vaerl {raw.get('vaerl_version')}; this "
                              f"vaerl {vaerl.__version__} reads up to format {version}: upgrade vaerl")
    try:
        decoded = {key: json.loads(value) for key, value in raw.items() if key not in _RESERVED}
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{path} has damaged metadata ({exc}); {fix}") from exc
    return {**decoded, "format_version": found, "vaerl_version": raw.get("vaerl_version", "unknown")}


def load_tensor_file(path: str | Path, *, kind: str, version: int, what: str,
                     fix: str) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Tensors and decoded metadata of a file written by :func:`save_tensor_file`."""
    metadata = read_tensor_metadata(path, kind=kind, version=version, what=what, fix=fix)
    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{path} is truncated or corrupt ({exc}); {fix}") from exc
    return tensors, metadata


def load_state_strict(module: torch.nn.Module, state: Mapping[str, torch.Tensor], path: str | Path, what: str) -> None:
    """``module.load_state_dict(state)``, turning any key or shape mismatch into a :class:`CheckpointError`."""
    expected = module.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    reshaped = sorted(k for k in set(expected) & set(state) if expected[k].shape != state[k].shape)
    if missing or unexpected or reshaped:
        raise CheckpointError(f"{path} does not match the {what} architecture in its own metadata (missing "
                              f"{(missing + reshaped)[:3]}, unexpected {unexpected[:3]}): the file is corrupt")
    module.load_state_dict(state)


def _plain(value: Any) -> Any:
    if hasattr(value, "item"):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot store {type(value).__name__} in checkpoint metadata")
