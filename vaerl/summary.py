"""A sweep in one table and one picture: gather the run directories below a folder and summarise them.

A run directory is recognised by what ``train_agent`` and ``pretrain`` leave behind:

* agent runs: ``eval.json`` (final return) and ``evaluations.json`` (return every ``eval.every`` steps);
* pretraining runs: ``metrics.json`` (final validation) and TensorBoard's ``val/loss``.

Runs are grouped by their path below the sweep directory with the ``seed<N>`` part removed, so
``Breakout/ppo-latenttrue/seed0`` and ``.../seed1`` form one group: game ``Breakout``, setting
``ppo-latenttrue`` (plus the other swept overrides in the path, less those all runs share). Each group reports mean ± std over its seeds. Wall-clock positions come from the
TensorBoard event times of the same scalars (time since the run's first event, so the downtime of a
requeued job is included); without event files they are estimated from the run's mean speed.

Runs whose directories are gone live on in the ``curves.json`` an earlier summary wrote: ``include`` reads
them back, so new runs can be drawn and tabled beside them, and ``settings`` keeps only the groups asked for.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import json
import logging
import re
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from vaerl.errors import ConfigError
from vaerl.io import atomic_path, atomic_write

log = logging.getLogger(__name__)

TABLE_FILE = "summary.md"
PLOT_FILE = "curves.png"
DATA_FILE = "curves.json"
_SEED = re.compile(r"^seed(\d+)$")


@dataclass(frozen=True)
class Curve:
    """A learning curve: a value at each step, and the seconds since the run started at that step."""

    steps: np.ndarray
    values: np.ndarray
    seconds: np.ndarray


@dataclass(frozen=True)
class Run:
    path: Path
    kind: str
    """``agent`` or ``pretrain``."""
    game: str
    setting: str
    seed: int | None
    final: dict[str, float]
    """The figures of the table, by column name."""
    curve: Curve | None = None
    training_curve: Curve | None = None
    """Agents only: SB3's training return (``rollout/ep_rew_mean``, the mean over the last 100 episodes)."""


@dataclass(frozen=True)
class Group:
    kind: str
    game: str
    setting: str
    runs: list[Run] = field(default_factory=list)

    @property
    def seeds(self) -> list[int]:
        return sorted(r.seed for r in self.runs if r.seed is not None)


@dataclass(frozen=True)
class Summary:
    table: str
    table_path: Path
    plot_path: Path | None
    data_path: Path
    """Every run's figures and curves as JSON: what the table and the plot were made from, kept once the runs are gone."""
    groups: list[Group]


# columns of the table: (key in Run.final, header, digits)
COLUMNS: dict[str, list[tuple[str, str, int]]] = {
    "agent": [("return", "final return", 1), ("steps", "agent steps", 0), ("fps", "agent steps/s", 0),
              ("hours", "train hours", 2)],
    "pretrain": [("loss", "val loss (nats/frame)", 1), ("bits_per_dim", "bits/dim", 4),
                 ("foreground_mse", "foreground MSE", 4), ("frames_per_s", "frames/s", 0)],
}
CURVE_LABEL = {"agent": "evaluation return", "pretrain": "validation loss (nats/frame)"}
TRAINING_RETURN_TAG = "rollout/ep_rew_mean"
STEP_LABEL = {"agent": "agent steps", "pretrain": "gradient steps"}


def summarize(sweep_dir: str | Path, out_dir: str | Path | None = None, include: Sequence[str | Path] = (),
              settings: Sequence[str] = ()) -> Summary:
    """Write ``summary.md``, ``curves.png`` and ``curves.json`` for every run below ``sweep_dir`` (into ``out_dir``,
    default ``sweep_dir``) and return the table.

    ``include``: ``curves.json`` files of earlier summaries, whose runs join these (a run of the same game and
    setting joins that group; one of the same seed too is left out, as the sweep's own copy comes first). ``settings``: shell-style patterns (``pixels-*``); only runs whose setting matches
    one are kept."""
    sweep_dir = Path(sweep_dir)
    if not sweep_dir.is_dir():
        raise ConfigError(f"{sweep_dir} is not a directory: pass a sweep directory (hydra.sweep.dir, e.g. runs/agent)")
    runs = _without_repeats(find_runs(sweep_dir) + [run for path in include for run in runs_from_json(Path(path))])
    if not runs:
        raise ConfigError(f"no finished runs below {sweep_dir}: a run leaves eval.json (agents) or metrics.json "
                          "(pretraining); wait for the sweep to finish or point at its directory")
    if settings:
        kept = [run for run in runs if any(fnmatch.fnmatchcase(run.setting, pattern) for pattern in settings)]
        if not kept:
            found = ", ".join(sorted({run.setting for run in runs}))
            raise ConfigError(f"no run's setting matches {', '.join(settings)}: the settings found are {found}")
        runs = kept
    groups = group_runs(runs)
    out = Path(out_dir) if out_dir is not None else sweep_dir
    table = markdown_table(groups)
    table_path = atomic_write(out / TABLE_FILE, lambda tmp: tmp.write_text(table))
    data = "[\n" + ",\n".join(json.dumps(record) for record in runs_as_json(groups, sweep_dir)) + "\n]\n"  # a run a line
    data_path = atomic_write(out / DATA_FILE, lambda tmp: tmp.write_text(data))
    plot_path = out / PLOT_FILE
    if not plot_curves(groups, plot_path):
        plot_path = None
    return Summary(table, table_path, plot_path, data_path, groups)


# ---------------------------------------------------------------------------------------------- reading runs
def find_runs(sweep_dir: Path) -> list[Run]:
    """Every finished agent or pretraining run below ``sweep_dir`` (``sweep_dir`` itself included)."""
    runs = []
    for marker in sorted([*sweep_dir.rglob("eval.json"), *sweep_dir.rglob("metrics.json")]):
        run_dir = marker.parent
        if marker.name == "metrics.json" and (run_dir / "eval.json").exists():
            continue  # an agent run that also wrote metrics: counted once, as an agent run
        try:
            data = json.loads(marker.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            log.warning("skipping %s: %s", marker, exc)
            continue
        game, setting, seed = run_labels(run_dir.relative_to(sweep_dir))
        if marker.name == "eval.json":
            runs.append(_agent_run(run_dir, data, game, setting, seed))
        elif data.get("completed", True):
            runs.append(_pretrain_run(run_dir, data, game, setting, seed))
    return drop_shared_overrides(runs)


def drop_shared_overrides(runs: list[Run]) -> list[Run]:
    """Remove from the settings the ``key=value`` overrides that every run shares (``total_steps=10000000``
    in the whole sweep): the label keeps what tells the settings apart."""
    if len(runs) < 2:
        return runs
    tokens = [_override_tokens(run.setting) for run in runs]
    shared = set.intersection(*(set(t) for t in tokens))
    if not shared:
        return runs
    shortened = []
    for run in runs:
        parts = [",".join(t for t in part.split(",") if t not in shared) if "=" in part else part
                 for part in run.setting.split("/")]
        shortened.append(dataclasses.replace(run, setting="/".join(p for p in parts if p) or "-"))
    return shortened


def _override_tokens(setting: str) -> list[str]:
    return [token for part in setting.split("/") if "=" in part for token in part.split(",")]


def run_labels(relative: Path) -> tuple[str, str, int | None]:
    """``Breakout/ppo-latenttrue/seed0/total_steps=1000`` -> game, setting (the rest, seed removed), seed."""
    parts = [p for p in relative.parts if p not in ("", ".")]
    seeds = [int(m.group(1)) for p in parts if (m := _SEED.match(p))]
    rest = [p for p in parts if not _SEED.match(p)]
    game = rest[0] if rest else "run"
    setting = "/".join(rest[1:]) or "-"
    return game, setting, seeds[-1] if seeds else None


def runs_from_json(path: Path) -> list[Run]:
    """The runs of a ``curves.json`` that :func:`summarize` wrote, as they were when it was written."""
    try:
        records = json.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path} does not exist: include the curves.json an earlier summary wrote") from None
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path} is not JSON ({exc}): include the curves.json an earlier summary wrote") from None

    def curve(record: dict[str, Any] | None) -> Curve | None:
        if record is None:
            return None
        return Curve(*(np.array([np.nan if v is None else v for v in record[key]], dtype=float)
                       for key in ("steps", "values", "seconds")))

    try:
        return [Run(Path(r["path"]), r["kind"], r["game"], r["setting"], r["seed"],
                    {key: np.nan if value is None else float(value) for key, value in r["final"].items()},
                    curve(r.get("curve")), curve(r.get("training_curve"))) for r in records]
    except (KeyError, TypeError) as exc:
        problem = f"a record lacks {exc}" if isinstance(exc, KeyError) else "it holds no list of run records"
        raise ConfigError(f"{path} is not a summary's curves.json ({problem}): include the curves.json "
                          "that scripts/summarize.py wrote") from None


def _without_repeats(runs: list[Run]) -> list[Run]:
    """The first run of each (kind, game, setting, seed): a run of the sweep wins over its copy in an included
    ``curves.json`` (the summary the same sweep wrote before, say), which would otherwise count it twice."""
    seen: set[tuple[str, str, str, int | None]] = set()
    unique = []
    for run in runs:
        key = (run.kind, run.game, run.setting, run.seed)
        if key in seen:
            log.info("%s %s seed %s is in the sweep already: its included copy is left out", run.game, run.setting, run.seed)
            continue
        seen.add(key)
        unique.append(run)
    return unique


def _agent_run(run_dir: Path, final: dict[str, Any], game: str, setting: str, seed: int | None) -> Run:
    history = _read_list(run_dir / "evaluations.json")
    steps = np.array([h["step"] for h in history], dtype=float)
    values = np.array([h["mean_return"] for h in history], dtype=float)
    total = float(final.get("total_steps", steps[-1] if len(steps) else 0))
    seconds = float(final.get("train_seconds", 0.0))
    if total and (not len(steps) or steps[-1] < total):  # the final evaluation closes the curve
        steps, values = np.append(steps, total), np.append(values, final["mean_return"])
    fps = float(final.get("fps") or (total / seconds if seconds else np.nan))
    curve = Curve(steps, values, _seconds_at(run_dir, history, final, steps, fps)) if len(steps) else None
    if curve is not None and np.isfinite(curve.seconds[-1]):
        seconds = float(curve.seconds[-1])  # the whole run's training time, also where it was resumed
    figures = {"return": float(final["mean_return"]), "steps": total, "fps": fps, "hours": seconds / 3600}
    training_curve = tensorboard_curve(run_dir / "tb", TRAINING_RETURN_TAG, 1 / fps if fps and np.isfinite(fps) else np.nan)
    return Run(run_dir, "agent", game, setting, seed, figures, curve, training_curve)


def _pretrain_run(run_dir: Path, metrics: dict[str, Any], game: str, setting: str, seed: int | None) -> Run:
    val = metrics.get("val", {})
    figures = {"loss": val.get("loss", np.nan), "bits_per_dim": val.get("bits_per_dim", np.nan),
               "foreground_mse": val.get("foreground_mse", np.nan), "frames_per_s": metrics.get("frames_per_s", np.nan)}
    total, seconds = metrics.get("steps"), metrics.get("train_seconds")
    curve = tensorboard_curve(run_dir / "tb", "val/loss", seconds / total if total and seconds else np.nan)
    return Run(run_dir, "pretrain", game, setting, seed, {k: float(v) for k, v in figures.items()}, curve)


def _read_list(path: Path) -> list[dict[str, Any]]:
    try:
        return json.loads(path.read_text()) if path.exists() else []
    except json.JSONDecodeError:
        log.warning("ignoring damaged %s", path)
        return []


def _seconds_at(run_dir: Path, history: list[dict[str, Any]], final: dict[str, Any], steps: np.ndarray,
                fps: float) -> np.ndarray:
    """Training seconds at each of ``steps``: the run's own clock where its evaluations recorded it (pauses
    between resumptions left out), else TensorBoard event times (:func:`training_seconds`), else ``steps / fps``."""
    if history and all("train_seconds" in h for h in history):
        logged = [(0.0, 0.0)] + [(h["step"], h["train_seconds"]) for h in history]
        if "train_seconds" in final:
            logged.append((final.get("total_steps", history[-1]["step"]), final["train_seconds"]))
        at_step, seconds = np.array(sorted(logged)).T
        return np.interp(steps, at_step, seconds)
    seconds_per_step = 1 / fps if fps and np.isfinite(fps) else np.nan
    return clock_at(tensorboard_segments(run_dir / "tb", "eval/mean_return"), steps, seconds_per_step)


def tensorboard_curve(tb_dir: Path, tag: str, seconds_per_step: float) -> Curve | None:
    """``tag``'s curve from the event files below ``tb_dir``, its seconds from their event times
    (:func:`clock_at`); None if no event file holds the tag."""
    segments = tensorboard_segments(tb_dir, tag)
    series = merge_segments(segments)
    if series is None:
        return None
    steps, values, _ = series
    return Curve(steps, values, clock_at(segments, steps, seconds_per_step))


def clock_at(segments: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray]], steps: np.ndarray,
             seconds_per_step: float) -> np.ndarray:
    """Training seconds at each of ``steps``: from the event times of ``segments`` with the pauses between
    resumptions left out (:func:`training_seconds`) where a process logged twice (a speed to bridge the gaps with),
    else at the run's mean ``seconds_per_step`` (NaN: unknown)."""
    if any(len(segment[0]) >= 2 for segment in segments):
        logged_steps, clock = training_seconds(segments)
        return np.interp(steps, logged_steps, clock)
    return steps * seconds_per_step if np.isfinite(seconds_per_step) else np.full(len(steps), np.nan)


def training_seconds(segments: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    """(steps, seconds of training at each) from the event files of one run, one ``(steps, values, wall times)``
    segment per process that wrote to it (a resumed run has several).

    Wall time between events of one process counts as it is. The time before a process's first event (its
    start-up, or a pause and a resumption) was not observed: it is bridged at the speed of the nearest process
    with two events, so a run paused for a day and resumed is not a day slower."""
    ordered = sorted((s for s in segments if len(s[0])), key=lambda s: s[0][0])
    rates = [(s[0][-1] - s[0][0]) / max(s[2][-1] - s[2][0], 1e-9) if len(s[0]) >= 2 else np.nan for s in ordered]
    known = [r for r in rates if np.isfinite(r)]
    if not known:
        raise ValueError("training_seconds needs a segment with at least two events")
    points: dict[float, float] = {}
    clock, previous_step, rate = 0.0, 0.0, known[0]
    for (seg_steps, _, wall), seg_rate in zip(ordered, rates):
        rate = seg_rate if np.isfinite(seg_rate) else rate
        clock += max(seg_steps[0] - previous_step, 0.0) / rate
        start = clock - wall[0]
        for step, time in zip(seg_steps, wall):
            points[float(step)] = start + time  # a resumed process's later value wins
        clock, previous_step = start + wall[-1], seg_steps[-1]
    at_step = np.array(sorted(points))
    return at_step, np.array([points[s] for s in at_step])


def tensorboard_segments(tb_dir: Path, tag: str) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """``(steps, values, wall times)`` of ``tag`` in each event file below ``tb_dir`` (one per process that
    logged), in the order the files were written; empty if there are none."""
    if not tb_dir.is_dir():
        return []
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # slow to import

    segments = []
    for file in sorted(tb_dir.rglob("events.out.tfevents.*"), key=_written_at):
        accumulator = EventAccumulator(str(file), size_guidance={"scalars": 0})
        accumulator.Reload()
        if tag in accumulator.Tags().get("scalars", []):
            events = accumulator.Scalars(tag)
            segments.append(tuple(np.array(v, dtype=float) for v in
                                  zip(*[(e.step, e.value, e.wall_time) for e in events])))
    return segments


def _written_at(event_file: Path) -> tuple[int, str]:
    """Event files are named ``events.out.tfevents.<unix time>.<host>...``: sort by that time."""
    stamp = event_file.name.split(".")[3]
    return (int(stamp) if stamp.isdigit() else 0, str(event_file))


def merge_segments(segments: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray]],
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """One ``(steps, values, wall times)`` series by step from the segments of :func:`tensorboard_segments`;
    None if they are empty."""
    points: dict[float, tuple[float, float]] = {}
    for steps, values, wall in segments:
        points.update({s: (v, w) for s, v, w in zip(steps, values, wall)})  # a resumed run's later value wins
    if not points:
        return None
    steps = np.array(sorted(points), dtype=float)
    values = np.array([points[s][0] for s in steps])
    wall = np.array([points[s][1] for s in steps])
    return steps, values, wall


# ---------------------------------------------------------------------------------------------- summarising
def group_runs(runs: Iterable[Run]) -> list[Group]:
    groups: dict[tuple[str, str, str], Group] = {}
    for run in runs:
        key = (run.kind, run.game, run.setting)
        groups.setdefault(key, Group(*key)).runs.append(run)
    return [groups[key] for key in sorted(groups)]


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and the sample standard deviation over seeds (0 for a single seed)."""
    array = np.asarray(values, dtype=float)
    return float(np.mean(array)), float(np.std(array, ddof=1)) if len(array) > 1 else 0.0


def markdown_table(groups: Sequence[Group]) -> str:
    """One table per kind of run: a row per (game, setting), each figure as mean ± std over seeds."""
    sections = []
    by_kind: dict[str, list[Group]] = defaultdict(list)
    for group in groups:
        by_kind[group.kind].append(group)
    for kind, kind_groups in by_kind.items():
        columns = COLUMNS[kind]
        lines = [f"### {'Agents' if kind == 'agent' else 'Pretraining'} (mean ± std over seeds)", "",
                 "| game | setting | seeds | " + " | ".join(header for _, header, _ in columns) + " |",
                 "|---|---|---|" + "---:|" * len(columns)]
        for group in kind_groups:
            cells = []
            for key, _, digits in columns:
                mean, std = mean_std([run.final[key] for run in group.runs])
                cells.append(_format(mean, std, digits, len(group.runs)))
            seeds = ",".join(map(str, group.seeds)) or "-"
            lines.append(f"| {group.game} | {group.setting} | {seeds} | " + " | ".join(cells) + " |")
        sections.append("\n".join(lines))
    return "\n\n".join(sections) + "\n"


def _format(mean: float, std: float, digits: int, n: int) -> str:
    if not np.isfinite(mean):
        return "-"
    return f"{mean:,.{digits}f}" if n == 1 else f"{mean:,.{digits}f} ± {std:,.{digits}f}"


def mean_curve(curves: Sequence[Curve], x: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Seeds' curves on a common axis (``steps`` or ``seconds``), up to where every seed has data:
    (x, mean, std)."""
    axes = [getattr(c, x) for c in curves]
    end = min(a[-1] for a in axes)
    grid = np.unique(np.concatenate([a[a <= end] for a in axes]))
    values = np.stack([np.interp(grid, a, c.values) for a, c in zip(axes, curves)])
    return grid, values.mean(axis=0), values.std(axis=0)


def runs_as_json(groups: Sequence[Group], sweep_dir: Path) -> list[dict[str, Any]]:
    """One record per run: its labels, its figures, its curve and (agents) its training-return curve, each as
    steps, values and training seconds. Unknown numbers are null, so that any JSON reader takes the file; the
    curves' values and seconds keep 7 significant digits, as many as TensorBoard's 32-bit scalars hold."""

    def numbers(values: Iterable[float]) -> list[float | None]:
        return [float(f"{v:.7g}") if np.isfinite(v) else None for v in values]

    def as_json(curve: Curve | None, label: str) -> dict[str, Any] | None:
        if curve is None:
            return None
        return {"label": label, "steps": [int(step) for step in curve.steps], "values": numbers(curve.values),
                "seconds": numbers(curve.seconds)}

    records = []
    for group in groups:
        for run in group.runs:
            records.append({
                "kind": run.kind, "game": run.game, "setting": run.setting, "seed": run.seed,
                "path": (run.path.relative_to(sweep_dir) if run.path.is_relative_to(sweep_dir) else run.path).as_posix(),
                "final": {key: float(value) if np.isfinite(value) else None for key, value in run.final.items()},
                "curve": as_json(run.curve, CURVE_LABEL[run.kind]),
                "training_curve": as_json(run.training_curve, "training return (last 100 episodes)"),
            })
    return records


def plot_curves(groups: Sequence[Group], path: Path) -> bool:
    """A row per (kind, game), the curve against steps (left) and wall-clock hours (right); False if no curves."""
    rows = sorted({(g.kind, g.game) for g in groups if any(r.curve is not None for r in g.runs)})
    if not rows:
        return False
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(rows), 2, figsize=(11, 3.4 * len(rows)), squeeze=False)
    for (kind, game), (by_step, by_time) in zip(rows, axes):
        for group in (g for g in groups if (g.kind, g.game) == (kind, game)):
            curves = [r.curve for r in group.runs if r.curve is not None and len(r.curve.steps)]
            if not curves:
                continue
            label = f"{group.setting} (n={len(curves)})"
            for ax, x, scale in ((by_step, "steps", 1.0), (by_time, "seconds", 3600.0)):
                usable = [c for c in curves if np.all(np.isfinite(getattr(c, x)))]
                if not usable:
                    continue
                grid, mean, std = mean_curve(usable, x)
                line, = ax.plot(grid / scale, mean, label=label)
                ax.fill_between(grid / scale, mean - std, mean + std, color=line.get_color(), alpha=0.2)
        by_step.set_xlabel(STEP_LABEL[kind])
        by_step.ticklabel_format(axis="x", style="sci", scilimits=(0, 0))  # 500000 and 2000000 alike: 5e5, 2e6
        by_time.set_xlabel("wall-clock hours")
        for ax in (by_step, by_time):
            ax.set_ylabel(CURVE_LABEL[kind])
            ax.set_title(game)
            ax.grid(alpha=0.3)
        by_step.legend(fontsize=8)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
    return True
