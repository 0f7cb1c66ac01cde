"""Which RAM bytes hold which game variables: the labels that linear probes try to read off a latent.

The table lives in ``annotations.json`` beside this module (AtariARI's annotations for 22 Atari
games plus vaerl's fake env), so adding a game is a data change: add an entry there, or pass your
own JSON file of the same shape to :func:`load_annotations`.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from vaerl.errors import ConfigError

RAM_SIZE = 128

CATEGORIES = ("small_object_localization", "agent_localization", "other_localization", "score_clock_lives_display",
              "misc")
"""AtariARI's variable categories (Anand et al. 2019, Table 3; ``atariari/benchmark/categorization.py``)."""


@dataclass(frozen=True)
class GameAnnotation:
    """The annotated RAM variables of one game.

    Attributes:
        name: the game's name (``Breakout``); also matched against ``EnvConfig.name``.
        ids: gymnasium ids that select this game (``ALE/Breakout-v5``).
        variables: variable name -> RAM address, in file order; a list of addresses in the file
            becomes ``name_0``, ``name_1``, ... as in AtariARI.
        source: where the annotation comes from.
        reference: published probe results to print beside ours (method -> mean F1).
        categories: category (one of :data:`CATEGORIES`) -> its variables, expanded like
            ``variables``; a variable may be in several categories or in none.
    """

    name: str
    ids: tuple[str, ...]
    variables: dict[str, int]
    source: str = ""
    reference: dict[str, float] = field(default_factory=dict)
    categories: dict[str, tuple[str, ...]] = field(default_factory=dict)

    def labels(self, ram: np.ndarray) -> np.ndarray:
        """RAM ``(N, 128)`` uint8 -> labels ``(N, num_variables)`` uint8, columns in ``variables`` order."""
        ram = np.asarray(ram)
        if ram.ndim != 2 or ram.shape[1] <= max(self.variables.values()):
            raise ConfigError(f"expected RAM of shape (N, {RAM_SIZE}) for {self.name}, got {ram.shape}")
        return ram[:, list(self.variables.values())].astype(np.uint8)


def load_annotations(path: str | Path | None = None) -> dict[str, GameAnnotation]:
    """Read an annotation file (default: the one shipped with vaerl) into ``{game name: annotation}``."""
    if path is None:
        text = resources.files("vaerl.evaluation").joinpath("annotations.json").read_text()
        where = "vaerl/evaluation/annotations.json"
    else:
        where = str(path)
        try:
            text = Path(path).read_text()
        except OSError as exc:
            raise ConfigError(f"cannot read the annotation file {path}: {exc}") from exc
    try:
        raw = json.loads(text)
        games = raw["games"]
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise ConfigError(f"{where} is not an annotation file ({exc!r}); expected "
                          '{"games": {"<Game>": {"ids": [...], "variables": {"<name>": <RAM address>}}}}') from exc
    return {name: _parse_game(name, entry, where) for name, entry in games.items()}


def find_annotation(env: dict[str, Any] | str, annotations: dict[str, GameAnnotation] | None = None) -> GameAnnotation:
    """The annotation for an env, given its ``EnvConfig`` dict (``name``/``id``) or a name or id string.

    Matching is by gymnasium id first, then by name, ignoring case and ALE decorations
    (``ALE/Pong-v5``, ``PongNoFrameskip-v4`` and ``pong`` all find ``Pong``).
    """
    annotations = load_annotations() if annotations is None else annotations
    keys = [env.get("id"), env.get("name")] if isinstance(env, dict) else [env]
    for key in filter(None, keys):
        for game in annotations.values():
            if key in game.ids:
                return game
        wanted = _game_key(str(key))
        for game in annotations.values():
            if wanted == _game_key(game.name) or wanted in {_game_key(i) for i in game.ids}:
                return game
    raise ConfigError(f"no RAM annotations for {keys[0] if len(keys) == 1 else keys}: annotated games are "
                      f"{sorted(annotations)}. Add the game to vaerl/evaluation/annotations.json or pass "
                      "annotations=<your file.json>")


def _game_key(name: str) -> str:
    """``ALE/Breakout-v5`` / ``BreakoutNoFrameskip-v4`` / ``breakout`` -> ``breakout``."""
    name = name.split("/")[-1]
    name = re.sub(r"-v\d+$", "", name)
    name = re.sub(r"(NoFrameskip|Deterministic)$", "", name)
    return name.lower()


def _parse_game(name: str, entry: dict[str, Any], where: str) -> GameAnnotation:
    variables: dict[str, int] = {}
    expanded: dict[str, list[str]] = {}  # name in the file -> its variables
    for var, address in entry.get("variables", {}).items():
        addresses = address if isinstance(address, list) else [address]
        expanded[var] = [f"{var}_{i}" if isinstance(address, list) else var for i in range(len(addresses))]
        for column, a in zip(expanded[var], addresses):
            if not isinstance(a, int) or not 0 <= a < RAM_SIZE:
                raise ConfigError(f"{where}: {name}.{var} has RAM address {a!r}; addresses are integers in "
                                  f"[0, {RAM_SIZE})")
            variables[column] = a
    if not variables:
        raise ConfigError(f"{where}: game {name} has no variables")
    categories: dict[str, tuple[str, ...]] = {}
    for category, members in entry.get("categories", {}).items():
        if category not in CATEGORIES:
            raise ConfigError(f"{where}: {name} has unknown category {category!r}; categories are {list(CATEGORIES)}")
        unknown = [m for m in members if m not in expanded]
        if unknown:
            raise ConfigError(f"{where}: {name}.categories.{category} names {unknown}, which are not among its "
                              f"variables {list(expanded)}")
        categories[category] = tuple(column for m in members for column in expanded[m])
    return GameAnnotation(name, tuple(entry.get("ids", ())), variables, entry.get("source", ""),
                          {k: float(v) for k, v in entry.get("reference", {}).items()}, categories)
