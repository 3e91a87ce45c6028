#!/usr/bin/env python
"""The AME paper's Table 1 or 2 beside this codebase's runs of the same rows, as one Markdown table.

For every row of the table (scripts/paper_tables.py) and every dataset it reads the results.json of the
seeds asked for, in the run folders `bash scripts/run_all.sh table1|table2` wrote, and prints the paper's
number (docs/ame_paper_tables.yaml), ours (mean +- std over the seeds found, population std as in
tools/parse_results.py, whose reading and statistics it uses) and ours minus the paper. A cell without a
finished run shows "-"; a row this codebase cannot train says why; numbers the paper itself gets wrong
are printed as given and flagged.

The run folders depend on the environment the runs were started with (RUN_TAG, EXTRA_OPTS, KD_WEIGHT and
NPROC name folders): run this tool with the same one. OUTPUT_ROOT is the ROOT argument.

Usage: ``python tools/paper_table.py ROOT --table 1|2 [--seeds 1 2 3] [--which best|last] [--out FILE]``.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Mapping, Sequence

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dassl.run_files import RESULTS_FILENAME  # noqa: E402
from scripts.paper_tables import (AVERAGE, SEEDS, TABLE_DATASETS, PaperTable, Row, load_paper_numbers,  # noqa: E402
                                  result_folder, table_rows)
from scripts.runs import ScriptError  # noqa: E402
from tools.parse_results import (Group, GroupKey, ResultsError, average_base2new, load_result,  # noqa: E402
                                 shows_base_new, summarize_base2new, summarize_cross)

METRIC_LABELS = {"base": "Base", "new": "New", "hm": "HM", "accuracy": "Accuracy"}
MISSING = "-"


def row_summaries(table: str, row: Row, root: str, env: Mapping[str, str], seeds: Sequence[str],
                  which: str = "best") -> dict[str, dict]:
    """Dataset -> summary of the row's scored runs (parse_results' mean / std per metric, plus `n`), for
    the datasets with at least one finished run. A results.json that cannot be used is reported on
    stderr and left out, as parse_results does."""
    if row.not_run:
        return {}
    step = row.scored
    base_new = table == "table1"
    env = {**env, "OUTPUT_ROOT": root}
    summaries = {}
    for dataset in TABLE_DATASETS[table]:
        records = []
        for seed in (seeds if step.seeded else (None,)):
            path = result_folder(step, dataset, seed, env) / RESULTS_FILENAME
            if not path.is_file():
                continue
            try:
                record = load_result(path)
                if shows_base_new(record) != base_new:
                    raise ResultsError(f"{path}: protocol '{record['protocol']}' does not hold "
                                       f"{'Base / New' if base_new else 'one accuracy'}")
            except ResultsError as error:
                print(f"warning: skipping {error}", file=sys.stderr)
                continue
            records.append(record)
        if records:
            group = Group(GroupKey(str(records[0]["protocol"]), dataset, step.trainer, step.shots, step.cfg), records)
            try:
                summaries[dataset] = (summarize_base2new if base_new else summarize_cross)(group, which)
            except ResultsError as error:
                print(f"warning: skipping {dataset} of {row.label}: {error}", file=sys.stderr)
    return summaries


def average_summary(table: str, summaries: Mapping[str, dict]) -> dict | None:
    """Ours for the average column, by the paper's rule (Table 1: mean Base and New over the datasets, HM
    of those means; Table 2: mean accuracy over the targets); None unless every dataset has runs."""
    datasets = TABLE_DATASETS[table]
    if any(dataset not in summaries for dataset in datasets):
        return None
    if table == "table1":
        return average_base2new({dataset: summaries[dataset] for dataset in datasets})
    return {"accuracy": sum(summaries[d]["accuracy"] for d in datasets) / len(datasets)}


def _ours(summary: dict | None, metric: str) -> str:
    if summary is None:
        return MISSING
    std = summary.get(f"{metric}_std")
    return f"{summary[metric]:.2f}" if std is None else f"{summary[metric]:.2f} +- {std:.2f}"


def _difference(summary: dict | None, metric: str, paper: float) -> str:
    return MISSING if summary is None else f"{summary[metric] - paper:+.2f}"


def format_table(paper: PaperTable, rows: Sequence[Row], ours: Mapping[str, Mapping[str, dict]],
                 which: str = "best") -> str:
    """The Markdown document: title, what the columns mean, one table (per dataset in the paper's order,
    the average included, one line per row), then the notes on the paper's numbers."""
    number = paper.name[-1]
    checkpoint = {"best": "results.json's `best` entry (distillation rows: the best-on-base checkpoint, as the "
                          "paper reports; the others: their final model)",
                  "last": "results.json's `last` entry (the last epoch)"}.get(which, which)
    flagged = {row.key: index + 1 for index, row in enumerate(r for r in rows if paper.notes_for(r.key))}
    header = ["Dataset", "Method", "n"]
    for metric in paper.metrics:
        label = METRIC_LABELS.get(metric, metric)
        header += [f"{label} paper", f"{label} ours", f"{label} diff"]
    header.append("Note")
    lines = [f"## AME paper, Table {number}: the paper's numbers beside ours", "",
             f"Paper: {paper.paper} {paper.citation}", "",
             f"Ours: mean +- std (population) over the n finished runs (seeds) of {checkpoint}; diff = ours "
             f"minus paper; \"{MISSING}\": no finished run. The average row follows the paper's rule and shows "
             f"ours only when every dataset has a finished run.", "",
             "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for column, printed in zip(paper.columns, paper.printed_columns):
        for row in rows:
            summaries = ours.get(row.key, {})
            if column == AVERAGE:
                summary = average_summary(paper.name, summaries)
                count = f"{len(summaries)}/{len(TABLE_DATASETS[paper.name])} datasets"
            else:
                summary = summaries.get(column)
                count = str(summary["n"]) if summary else "0"
            cells = [f"**{printed}**" if column == AVERAGE else printed, row.label, count]
            for index, metric in enumerate(paper.metrics):
                value = paper.values[row.key][column][index]
                cells += [f"{value:.2f}", _ours(summary, metric), _difference(summary, metric, value)]
            notes = []
            if row.not_run:
                notes.append(f"not run: {row.not_run}")
            if row.key in flagged:
                notes.append(f"paper's row inconsistent, note [{flagged[row.key]}]")
            cells.append("; ".join(notes))
            lines.append("| " + " | ".join(cells) + " |")
    if flagged:
        lines += ["", "Notes on the paper's numbers:", ""]
        for key, index in flagged.items():
            lines += [f"[{index}] {' '.join(paper.notes_for(key))}"]
    return "\n".join(lines) + "\n"


def paper_table(table: str, root: str, env: Mapping[str, str], seeds: Sequence[str] = SEEDS,
                which: str = "best") -> str:
    """The Markdown of `table` ("table1" / "table2") for the runs under `root`."""
    rows = table_rows(table)
    paper = load_paper_numbers(table)
    ours = {row.key: row_summaries(table, row, root, env, seeds, which) for row in rows}
    return format_table(paper, rows, ours, which)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", help="the OUTPUT_ROOT of the runs (e.g. output)")
    parser.add_argument("--table", choices=("1", "2"), required=True, help="the paper's table")
    parser.add_argument("--seeds", nargs="+", default=list(SEEDS), help="seeds to look for (default: 1 2 3)")
    parser.add_argument("--which", choices=("best", "last"), default="best",
                        help="results.json entry: best-on-base checkpoint (default, the paper's) or last epoch")
    parser.add_argument("--out", metavar="FILE", help="also write the Markdown to FILE")
    args = parser.parse_args(argv)
    if not Path(args.root).is_dir():
        print(f"error: output root not found: {args.root} (pass the OUTPUT_ROOT of the runs)", file=sys.stderr)
        return 2
    try:
        text = paper_table(f"table{args.table}", args.root, os.environ, args.seeds, args.which)
    except ScriptError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(text, end="")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text, encoding="utf-8")
        print(f"Written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
