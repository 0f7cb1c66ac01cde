"""JSON descriptions of gymnasium spaces, so demo files and policy checkpoints can say what they were recorded in."""

from __future__ import annotations

from typing import Any

import numpy as np
from gymnasium import spaces

from vaerl.errors import DatasetError


def describe_space(space: spaces.Space) -> dict[str, Any]:
    """JSON description of a ``Box`` or ``Discrete`` space (bounds kept as scalars when uniform)."""
    if isinstance(space, spaces.Discrete):
        return {"type": "Discrete", "n": int(space.n), "start": int(space.start)}
    if isinstance(space, spaces.Box):
        def bound(values: np.ndarray) -> Any:
            flat = np.asarray(values, dtype=np.float64)
            return float(flat.flat[0]) if flat.size and np.all(flat == flat.flat[0]) else flat.tolist()

        return {"type": "Box", "shape": list(space.shape), "dtype": str(space.dtype),
                "low": bound(space.low), "high": bound(space.high)}
    raise DatasetError(f"only Box and Discrete spaces are supported for demonstrations, got {space}")


def space_from_description(data: dict[str, Any]) -> spaces.Space:
    """Inverse of :func:`describe_space`."""
    if data.get("type") == "Discrete":
        return spaces.Discrete(int(data["n"]), start=int(data.get("start", 0)))
    if data.get("type") == "Box":
        shape = tuple(int(v) for v in data["shape"])
        dtype = np.dtype(data["dtype"])
        low = np.broadcast_to(np.asarray(data["low"], dtype=np.float64), shape).astype(dtype)
        high = np.broadcast_to(np.asarray(data["high"], dtype=np.float64), shape).astype(dtype)
        return spaces.Box(low, high, shape, dtype)
    raise DatasetError(f"unknown space description {data!r}")


def space_mismatch(name: str, expected: dict[str, Any], space: spaces.Space, where: str = "in the file") -> str | None:
    """A sentence saying how ``space`` differs from the described one, or ``None`` when they match."""
    try:
        found = describe_space(space)
    except DatasetError as exc:
        return f"{name}: {exc}"
    if space_from_description(expected) == space and expected["type"] == found["type"]:
        return None
    return f"{name} is {short_description(found)} here but {short_description(expected)} {where}"


def short_description(desc: dict[str, Any]) -> str:
    """``Discrete(8)`` or ``Box(shape=..., dtype=..., low=..., high=...)`` from a description."""
    if desc["type"] == "Discrete":
        return f"Discrete({desc['n']})"
    return f"Box(shape={tuple(desc['shape'])}, dtype={desc['dtype']}, low={desc['low']}, high={desc['high']})"
