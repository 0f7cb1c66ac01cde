"""Summarise a sweep: one markdown table (mean ± std over seeds per game and setting) and one PNG of
learning curves (against agent steps and against wall-clock time).

    python scripts/summarize.py runs/agent                 # after train_agent.py -m ...
    python scripts/summarize.py runs/pretrain [--out DIR]  # after pretrain_vae.py -m ...
    python scripts/summarize.py runs/agent --include old/curves.json --setting 'pixels-*' --setting 'latents-*'

Writes summary.md, curves.png and curves.json (every run's figures and curves, to redraw or compare once the
runs are gone) into the sweep directory (or --out) and prints the table.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from vaerl.cli import run_main
from vaerl.summary import summarize


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("sweep_dir", type=Path, help="the sweep's directory (hydra.sweep.dir), e.g. runs/agent")
    parser.add_argument("--out", type=Path, default=None, help="where to write summary.md, curves.png and curves.json")
    parser.add_argument("--include", type=Path, action="append", default=[], metavar="CURVES_JSON",
                        help="an earlier summary's curves.json: its runs join these (repeatable)")
    parser.add_argument("--setting", action="append", default=[], metavar="PATTERN",
                        help="keep only the runs whose setting matches this shell pattern (repeatable)")
    args = parser.parse_args()
    summary = run_main(lambda: summarize(args.sweep_dir, args.out, include=args.include, settings=args.setting))
    print(summary.table)
    plot = f", {summary.plot_path}" if summary.plot_path else " (no curves to plot)"
    print(f"wrote {summary.table_path}{plot} and {summary.data_path}")


if __name__ == "__main__":
    main()
