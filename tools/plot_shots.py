#!/usr/bin/env python
"""Plot accuracy (Base, New, HM) against the number of shots, per trainer (AME's Fig. 5).

Usage: ``python tools/plot_shots.py ROOT [--out shots.png] [--which best|last]``.

Reads every ``results.json`` with Base / New accuracies under ROOT (base2novel distillation runs, and
base-to-new runs of supervised prompt learners) the way ``tools/parse_results.py`` does (same grouping,
same statistics) and draws, for each dataset, three panels (Base, New, HM) with a line per trainer through
the mean over seeds and a band of +- one standard deviation:

- Base / New: the mean and population standard deviation (ddof 0) of the per-seed accuracies (%);
- HM: the harmonic mean of the mean Base and mean New (parse_results' convention), with the standard
  deviation of the per-seed HMs as its band;
- ``--which best`` (default) takes the best-on-base checkpoint of every run (PromptKD's reporting),
  ``last`` the last epoch;
- shots 0 means the whole training split ("full", plotted last); the x axis spaces the numbers of shots
  evenly, in increasing order;
- runs that were never trained (zero-shot CLIP: best epoch 0) are horizontal dashed references;
- a trainer with several configurations at the same number of shots gets a curve per configuration.

The points are also printed as text. ``--out`` defaults to ``shots.png`` in the current folder.
Needs matplotlib, from the optional extra: ``pip install -e ".[analysis]"``.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Optional, Sequence

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dassl.utils import UserError, expected_failure_line  # noqa: E402
from tools import parse_results  # noqa: E402
from tools.analysis.extra import require_analysis_extra  # noqa: E402

DEFAULT_OUT = "shots.png"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tools/plot_shots.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("root", help="output root to search for results.json files")
    parser.add_argument("--out", default=DEFAULT_OUT, help="image file to write (default: shots.png)")
    parser.add_argument("--which", choices=("best", "last"), default="best",
                        help="best-on-base checkpoint (default) or last epoch")
    return parser


def plot_shots(root: str, out: str, which: str = "best") -> str:
    """Read the results under ``root``, print the curves and draw them into ``out``; returns ``out``."""
    require_analysis_extra(("matplotlib",))
    from tools.analysis.plots import plot_shot_curves
    from tools.analysis.shots import format_curves, has_base_and_new, shot_curves

    if not os.path.isdir(root):
        raise UserError(f'Results root not found: "{root}"')
    records = parse_results.load_results(root)
    skipped = sum(1 for record in records if not has_base_and_new(record))
    if skipped:
        print(f"Note: {skipped} run(s) without Base / New accuracies (e.g. cross-dataset) left out")
    curves = shot_curves(records, which)
    if not curves:
        raise UserError(f'no base-to-new results.json under "{root}": nothing to plot (train runs first, or '
                        "point ROOT at their output folder)")
    print(format_curves(curves))
    folder = os.path.dirname(os.path.abspath(out))
    os.makedirs(folder, exist_ok=True)
    plot_shot_curves(curves, out, which)
    print(f"Shot curves written to {out}")
    return out


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Command-line entry point: 0 on success, 2 with one ``Error:`` line for an expected failure."""
    args = build_parser().parse_args(argv)
    try:
        plot_shots(args.root, args.out, args.which)
    except Exception as exc:  # noqa: BLE001  (expected failures end in one line; others keep their traceback)
        line = expected_failure_line(exc)
        if line is None and isinstance(exc, parse_results.ResultsError):
            line = str(exc)
        if line is None:
            raise
        sys.stdout.flush()
        print(f"Error: {line}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
