"""The rollout picture: trajectories coloured by the side they passed the obstacle on, one panel per policy."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from agents.bc.evaluate import LEFT, RIGHT, EvalResult
from vaerl.envs.obstacle import ObstacleEnv
from vaerl.io import atomic_path

COLOURS = {LEFT: "tab:blue", RIGHT: "tab:orange"}
FAILED = "0.55"


def plot_rollouts(panels: Sequence[tuple[str, EvalResult]], path: str | Path, max_rollouts: int = 100) -> Path | None:
    """Draw each policy's rollouts side by side and write a PNG atomically; ``None`` when no env reported positions.

    Successful rollouts are blue (passed left) or orange (passed right); failures are grey with a
    red cross where they ended. The obstacle and goal are drawn at their mean place and size (dashed:
    the largest obstacle).
    """
    panels = [(name, result) for name, result in panels if any(r.positions is not None for r in result.rollouts)]
    if not panels:
        return None
    import matplotlib

    matplotlib.use("Agg")  # files only; never needs a display (imported here: it costs a second at startup)
    import matplotlib.pyplot as plt
    nominal = ObstacleEnv()
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 4.4), squeeze=False)
    for ax, (name, result) in zip(axes[0], panels):
        obstacle_y, radius = float(np.mean(nominal.obstacle_y)), float(np.mean(nominal.obstacle_radius))
        ax.add_patch(plt.Circle((0.5, obstacle_y), radius, color="tab:red", alpha=0.35))
        ax.add_patch(plt.Circle((0.5, obstacle_y), max(nominal.obstacle_radius), color="tab:red", fill=False,
                                ls="--", lw=0.8, alpha=0.5))
        ax.add_patch(plt.Circle((float(np.mean(nominal.goal_x)), 0.9), nominal.goal_radius, color="tab:green",
                                alpha=0.35))
        for rollout in result.rollouts[:max_rollouts]:
            if rollout.positions is None:
                continue
            xy = rollout.positions
            colour = COLOURS.get(rollout.side, FAILED) if rollout.success else FAILED
            ax.plot(xy[:, 0], xy[:, 1], color=colour, lw=0.9, alpha=0.6)
            if not rollout.success:
                ax.plot(xy[-1, 0], xy[-1, 1], "x", color="tab:red", ms=4, alpha=0.8)
        coverage = result.mode_coverage
        ax.set_title(f"{name}\nsuccess {result.success_rate:.0%}, left/right {coverage['left']:.0%}/"
                     f"{coverage['right']:.0%}", fontsize=10)
        ax.set_xlim(0, 1), ax.set_ylim(0, 1), ax.set_aspect("equal")
        ax.set_xticks([]), ax.set_yticks([])
    handles = [plt.Line2D([], [], color=COLOURS[LEFT], label="success, passed left"),
               plt.Line2D([], [], color=COLOURS[RIGHT], label="success, passed right"),
               plt.Line2D([], [], color=FAILED, marker="x", markeredgecolor="tab:red", label="failure")]
    fig.legend(handles=handles, loc="lower center", ncol=3, fontsize=9, frameon=False)
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path
