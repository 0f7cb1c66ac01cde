"""Build typed dataclass configs from plain dicts, rejecting unknown keys with a suggestion.

Scripts turn their Hydra config into a plain dict and call :func:`from_dict`; the library only
ever sees dataclasses, never Hydra objects.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from typing import Any, TypeVar

from vaerl.errors import ConfigError

T = TypeVar("T")


def from_dict(cls: type[T], data: dict[str, Any] | None, where: str = "") -> T:
    """Instantiate dataclass ``cls`` from ``data``, recursing into nested dataclass fields."""
    data = dict(data or {})
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = [key for key in data if key not in fields]
    if unknown:
        raise ConfigError(_unknown_key_message(cls, unknown[0], list(fields), where))
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for name, value in data.items():
        kwargs[name] = _convert(hints[name], value, f"{where}.{name}" if where else name)
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"invalid config {where or cls.__name__}: {exc}") from exc


def to_dict(config: Any) -> dict[str, Any]:
    """Plain-dict view of a (nested) dataclass config, for JSON and checkpoints."""
    return dataclasses.asdict(config)


def _convert(hint: Any, value: Any, where: str) -> Any:
    origin = typing.get_origin(hint)
    if dataclasses.is_dataclass(hint) and isinstance(value, dict):
        return from_dict(hint, value, where)
    if origin in (typing.Union, types.UnionType):
        for option in typing.get_args(hint):
            if dataclasses.is_dataclass(option) and isinstance(value, dict):
                return from_dict(option, value, where)
        return value
    if origin is tuple and isinstance(value, list):
        return tuple(value)
    return value


def _unknown_key_message(cls: type, key: str, known: list[str], where: str) -> str:
    location = f"{where}.{key}" if where else key
    close = difflib.get_close_matches(key, known, n=1)
    hint = f" Did you mean '{close[0]}'?" if close else ""
    return f"unknown config key '{location}' for {cls.__name__}.{hint} Valid keys: {', '.join(sorted(known))}."
