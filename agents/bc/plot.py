"""The rollout picture: trajectories coloured by the way they went, one panel per policy."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from agents.bc.evaluate import EvalResult
from vaerl.io import atomic_path

MODE_COLOURS = ("tab:blue", "tab:orange", "tab:purple", "tab:cyan", "tab:brown", "tab:olive")
FAILED = "0.55"
SCENE_STYLE: dict[str, dict[str, Any]] = {
    "obstacle": {"color": "tab:red", "alpha": 0.35},
    "largest obstacle": {"color": "tab:red", "fill": False, "ls": "--", "lw": 0.8, "alpha": 0.5},
    "goal": {"color": "tab:green", "alpha": 0.35},
}


def plot_rollouts(
    panels: Sequence[tuple[str, EvalResult]], path: str | Path, scene: Sequence[Any] = (), max_rollouts: int = 100
) -> Path | None:
    """Draw each policy's rollouts side by side and write a PNG atomically; ``None`` when no env reported positions.

    Successful rollouts are coloured by their mode (blue: the first, e.g. passed left; orange: the
    second, ...); failures are grey with a red cross where they ended. ``scene`` holds the circles
    to draw under them (``x, y, radius, kind``; an obstacle env's ``scene()``).
    """
    panels = [(name, result) for name, result in panels if any(r.positions is not None for r in result.rollouts)]
    if not panels:
        return None
    import matplotlib

    matplotlib.use("Agg")  # files only; never needs a display (imported here: it costs a second at startup)
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 4.4), squeeze=False)
    for ax, (name, result) in zip(axes[0], panels):
        for circle in scene:
            ax.add_patch(plt.Circle((circle.x, circle.y), circle.radius, **SCENE_STYLE.get(circle.kind, {})))
        for rollout in result.rollouts[:max_rollouts]:
            if rollout.positions is None:
                continue
            xy = rollout.positions
            colour = MODE_COLOURS[rollout.mode % len(MODE_COLOURS)] if rollout.success and rollout.mode >= 0 else FAILED
            ax.plot(xy[:, 0], xy[:, 1], color=colour, lw=0.9, alpha=0.6)
            if not rollout.success:
                ax.plot(xy[-1, 0], xy[-1, 1], "x", color="tab:red", ms=4, alpha=0.8)
        ax.set_title(f"{name}\n{result.describe()}", fontsize=10)
        ax.set_xlim(0, 1), ax.set_ylim(0, 1), ax.set_aspect("equal")
        ax.set_xticks([]), ax.set_yticks([])
    names = panels[0][1].mode_names
    handles = [plt.Line2D([], [], color=MODE_COLOURS[i % len(MODE_COLOURS)], label=f"success, {name}")
               for i, name in enumerate(names)]
    handles.append(plt.Line2D([], [], color=FAILED, marker="x", markeredgecolor="tab:red", label="failure"))
    fig.legend(handles=handles, loc="lower center", ncol=len(handles), fontsize=9, frameon=False)
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def scene_of(env: Any) -> list[Any]:
    """The circles an env offers for pictures (``unwrapped.scene()``), or none."""
    scene = getattr(getattr(env, "unwrapped", env), "scene", None)
    return list(scene()) if callable(scene) else []
