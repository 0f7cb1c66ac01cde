"""Glue shared by the entry points in ``scripts/``: the resolved Hydra config into a typed config, and
library errors into a friendly message and exit code.

Hydra objects stop here: the rest of the library sees plain dicts and dataclasses.
"""

from __future__ import annotations

import dataclasses
import logging
import sys
from collections.abc import Callable
from typing import Any, TypeVar

from omegaconf import DictConfig, OmegaConf

from vaerl.config import from_dict
from vaerl.errors import VaerlError
from vaerl.stop import RunStopped

T = TypeVar("T")
log = logging.getLogger("vaerl")


# top-level nodes that feed interpolations in the YAML (paths.runs, ...); dropped unless the config asks for them
_INTERPOLATION_ONLY = ("hydra", "paths")


def parse_config(cls: type[T], data: dict[str, Any]) -> T:
    """Build the script's config dataclass from the resolved Hydra config (as a plain dict)."""
    wanted = {field.name for field in dataclasses.fields(cls)}  # type: ignore[arg-type]
    data = {k: v for k, v in data.items() if k in wanted or k not in _INTERPOLATION_ONLY}
    return from_dict(cls, data)


def run_main(main: Callable[[], Any]) -> Any:
    """Run ``main`` and turn a :class:`VaerlError` into a one-paragraph message and exit code 2, and a run that
    stopped on a signal after saving its state into that signal's exit status (see :mod:`vaerl.stop`)."""
    try:
        return main()
    except RunStopped as exc:
        log.warning("%s", exc)
        sys.exit(exc.exit_status)
    except VaerlError as exc:
        log.error("%s: %s", type(exc).__name__, exc)
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)


def path_shorthand(argv: list[str], node: str) -> list[str]:
    """``node=<path>`` on the command line as ``node.path=<path>``, for config nodes with more options than a path
    (``encoder=runs/.../encoder.safetensors`` beside ``encoder.finetune=true``)."""
    prefix = f"{node}="
    return [f"{node}.path={arg[len(prefix):]}" if arg.startswith(prefix) else arg for arg in argv]


def run_config(cfg: DictConfig, cls: type[T], run: Callable[[T], Any]) -> Any:
    """A script's body: resolve ``cfg``, parse it into ``cls`` and call ``run`` on it under :func:`run_main`."""
    raw = OmegaConf.to_container(cfg, resolve=True)
    return run_main(lambda: run(parse_config(cls, raw)))  # type: ignore[arg-type]
