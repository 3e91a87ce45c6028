#!/usr/bin/env python
"""Collect ``results.json`` files under an output root and print one table per experiment setting.

Every run written by ``trainers/results.py`` leaves one ``results.json`` (see ARCHITECTURE.md). This
tool finds them, groups runs that differ only by seed, and reports mean +- std over seeds, for the
best-on-base checkpoint ("best", PromptKD's reporting) and for the last epoch ("last").

What a table shows depends on the record's protocol:
- ``base2novel`` (distillation, transductive) and ``base2new`` (supervised, inductive): Base / New / HM,
  each protocol in its own tables;
- ``cross`` and ``fewshot``: one accuracy per dataset;
- ``evaluation`` (``train.py --eval-only``): kept apart from training runs, grouped by what was
  evaluated: a distillation trainer's record names ``evaluated_protocol`` and holds Base / New / HM, a
  supervised trainer's holds one accuracy on ``split`` of the ``subsample`` classes.

Conventions (stated because papers differ on them):
- std is the population standard deviation over seeds (``ddof=0``, like Dassl's ``parse_test_res.py``);
  a single seed therefore shows ``+- 0.00``.
- A dataset's HM is the harmonic mean of its mean Base and mean New (how CoOp-family papers compute it);
  the +- next to it is the std of the per-seed HMs.
- Averages over datasets are plain means of the per-dataset means; their HM is the harmonic mean of the
  averaged Base and New. The 11-dataset average is printed only when all 11 base-to-new datasets are
  present; otherwise the row is labelled with how many are present.

Usage: ``python tools/parse_results.py output/ [--which best|last|both] [--csv FILE]``.
"""
from __future__ import annotations

import argparse
import csv
import json
import math
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dassl.run_files import RESULTS_FILENAME  # noqa: E402

BASE2NEW_DATASETS: tuple[str, ...] = (
    "ImageNet", "Caltech101", "OxfordPets", "StanfordCars", "OxfordFlowers", "Food101",
    "FGVCAircraft", "SUN397", "DescribableTextures", "EuroSAT", "UCF101",
)
"""The 11 base-to-new benchmark datasets (``DATASET.NAME``), in the order papers print them."""

BASE_NEW_PROTOCOLS = ("base2novel", "base_only", "base2new")
"""Protocols whose entries hold base / new / hm (the others hold one accuracy)."""

EVALUATION = "evaluation"
"""The protocol of an evaluation-only record."""

SELECTED_BY_AGREEMENT = "selected_by_agreement"
"""The extra entry of a distillation run with held-out model selection (``TRAINER.PROMPTKD.SELECT_HOLDOUT``);
tabled after the others for the groups whose every run has it."""

CROSS_SOURCE = "ImageNet"
"""Source dataset of the cross-dataset protocol; not counted in the target average."""

_SEED_DIR = re.compile(r"^seed_?\d+$")


class ResultsError(ValueError):
    """A results.json file that cannot be used (the message names the file)."""


@dataclass(frozen=True)
class GroupKey:
    """Everything that identifies an experiment except the seed."""

    protocol: str
    dataset: str
    trainer: str
    shots: str
    config: str
    evaluated: str = ""   # evaluation records: what was evaluated (see `evaluated_label`)


@dataclass
class Group:
    """Runs of one experiment over several seeds."""

    key: GroupKey
    runs: list[dict] = field(default_factory=list)

    @property
    def seeds(self) -> list:
        return sorted(run.get("seed") for run in self.runs)


# --------------------------------------------------------------------------- reading

def find_result_files(root: str | Path) -> list[Path]:
    """All ``results.json`` files below ``root`` (sorted, hidden folders skipped)."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"Output root not found: {root}")
    return sorted(
        p for p in root.rglob(RESULTS_FILENAME)
        if not any(part.startswith(".") for part in p.relative_to(root).parts[:-1])
    )


def config_label(record: dict, path: Path | None) -> str:
    """Name the configuration of a run so that only its seeds differ within a group.

    An explicit ``config`` field wins. Otherwise, when the run folder is a seed folder
    (``seed1`` / ``seed_1``), the parent folder's name is used: our scripts encode the config file
    name and any extra options there. A run folder without a seed (zero-shot CLIP) is named by itself.
    Without a path, the config hash is used.
    """
    if record.get("config"):
        return str(record["config"])
    if path is not None:
        return path.parent.parent.name if _SEED_DIR.match(path.parent.name) else path.parent.name
    return str(record.get("config_hash", "?"))


def evaluated_label(record: dict) -> str:
    """What an evaluation-only record measured ("" for a training run): the protocol a distillation
    trainer's evaluation scored (``evaluated_protocol``), else the classes and split of a supervised one."""
    if record.get("protocol") != EVALUATION:
        return ""
    if record.get("evaluated_protocol"):
        return str(record["evaluated_protocol"])
    return f"subsample {record.get('subsample', '?')}, split {record.get('split', '?')}"


def shows_base_new(record: dict) -> bool:
    """Whether the record's entries hold base / new / hm (else one accuracy)."""
    protocol = record.get("protocol")
    if protocol == EVALUATION:
        return record.get("evaluated_protocol") in BASE_NEW_PROTOCOLS
    return protocol in BASE_NEW_PROTOCOLS


def load_result(path: str | Path) -> dict:
    """Read one results.json and check the fields the tables need."""
    path = Path(path)
    try:
        record = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ResultsError(f"{path}: not valid JSON ({err})") from err
    if not isinstance(record, dict):
        raise ResultsError(f"{path}: expected a JSON object")
    missing = [k for k in ("trainer", "dataset", "protocol", "best", "last") if k not in record]
    if missing:
        raise ResultsError(f"{path}: missing keys {missing}")
    record = dict(record)
    record["_path"] = str(path)
    record["_config"] = config_label(record, path)
    return record


def load_results(root: str | Path, strict: bool = False) -> list[dict]:
    """Load every results.json under ``root``; unusable files are reported and skipped unless strict."""
    records = []
    for path in find_result_files(root):
        try:
            records.append(load_result(path))
        except ResultsError as err:
            if strict:
                raise
            print(f"warning: skipping {err}", file=sys.stderr)
    return records


def group_runs(records: Iterable[dict]) -> list[Group]:
    """Group runs by (protocol, dataset, trainer, shots, config); order is stable and readable."""
    groups: dict[GroupKey, Group] = {}
    for rec in records:
        key = GroupKey(
            protocol=str(rec["protocol"]),
            dataset=str(rec["dataset"]),
            trainer=str(rec["trainer"]),
            shots=str(rec.get("shots", "?")),
            config=str(rec.get("_config") or config_label(rec, None)),
            evaluated=evaluated_label(rec),
        )
        groups.setdefault(key, Group(key)).runs.append(rec)
    return [groups[k] for k in sorted(groups, key=_group_sort_key)]


def _group_sort_key(key: GroupKey):
    order = BASE2NEW_DATASETS.index(key.dataset) if key.dataset in BASE2NEW_DATASETS else 99
    return (key.protocol, key.evaluated, key.trainer, key.shots, key.config, order, key.dataset)


# --------------------------------------------------------------------------- statistics

def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and population standard deviation (ddof=0) of a non-empty sequence."""
    if not values:
        raise ValueError("mean_std needs at least one value")
    n = len(values)
    mean = sum(values) / n
    var = sum((v - mean) ** 2 for v in values) / n
    return mean, math.sqrt(var)


def harmonic_mean(base: float, new: float) -> float:
    """HM = 2·Base·New / (Base + New); 0 when both are 0."""
    return 0.0 if base + new == 0 else 2.0 * base * new / (base + new)


def _entry(run: dict, which: str) -> dict:
    entry = run.get(which)
    if not isinstance(entry, dict):
        raise ResultsError(f"{run.get('_path', '?')}: '{which}' is not an object")
    return entry


def summarize_base2new(group: Group, which: str = "best") -> dict:
    """Base / New / HM mean and std over the group's seeds for the ``best`` or ``last`` entry."""
    base, new, hms = [], [], []
    for run in group.runs:
        entry = _entry(run, which)
        try:
            b, n = float(entry["base"]), float(entry["new"])
        except KeyError as err:
            raise ResultsError(f"{run.get('_path', '?')}: '{which}' lacks {err}") from err
        base.append(b)
        new.append(n)
        hms.append(float(entry["hm"]) if "hm" in entry else harmonic_mean(b, n))
    base_m, base_s = mean_std(base)
    new_m, new_s = mean_std(new)
    _, hm_s = mean_std(hms)
    return {
        "n": len(group.runs), "seeds": group.seeds,
        "base": base_m, "base_std": base_s,
        "new": new_m, "new_std": new_s,
        "hm": harmonic_mean(base_m, new_m), "hm_std": hm_s,
    }


def summarize_cross(group: Group, which: str = "best") -> dict:
    """Accuracy mean and std over the group's seeds for the ``best`` or ``last`` entry."""
    accs = []
    for run in group.runs:
        entry = _entry(run, which)
        if "accuracy" not in entry:
            raise ResultsError(f"{run.get('_path', '?')}: '{which}' lacks 'accuracy'")
        accs.append(float(entry["accuracy"]))
    acc_m, acc_s = mean_std(accs)
    return {"n": len(group.runs), "seeds": group.seeds, "accuracy": acc_m, "accuracy_std": acc_s}


def average_base2new(rows: dict[str, dict]) -> dict:
    """Average of per-dataset summaries (dataset -> summary); HM from the averaged Base / New."""
    base = sum(r["base"] for r in rows.values()) / len(rows)
    new = sum(r["new"] for r in rows.values()) / len(rows)
    return {"base": base, "new": new, "hm": harmonic_mean(base, new), "count": len(rows)}


# --------------------------------------------------------------------------- tables

@dataclass(frozen=True)
class Setting:
    """A table: one protocol (and, for evaluations, what was evaluated) / trainer / shots / config;
    rows are datasets. `base_new`: the rows hold Base / New / HM, else one accuracy."""

    protocol: str
    trainer: str
    shots: str
    config: str
    evaluated: str = ""
    base_new: bool = True

    @property
    def label(self) -> str:
        """The protocol as the table title names it, e.g. ``evaluation (subsample new, split test)``."""
        return f"{self.protocol} ({self.evaluated})" if self.evaluated else self.protocol


def build_tables(groups: list[Group], which: str) -> list[tuple[Setting, dict[str, dict]]]:
    """Per setting, dataset -> summary (Base / New / HM or accuracy, depending on the records)."""
    tables: dict[Setting, dict[str, dict]] = {}
    for g in groups:
        k = g.key
        base_new = shows_base_new(g.runs[0])
        setting = Setting(k.protocol, k.trainer, k.shots, k.config, k.evaluated, base_new)
        summary = summarize_base2new(g, which) if base_new else summarize_cross(g, which)
        tables.setdefault(setting, {})[k.dataset] = summary
    return list(tables.items())


def _pm(mean: float, std: float | None = None) -> str:
    return f"{mean:.2f}" if std is None else f"{mean:.2f} +- {std:.2f}"


def _seeds(summary: dict) -> str:
    return ",".join(str(s) for s in summary["seeds"])


def format_base2new_table(setting: Setting, rows: dict[str, dict], which: str) -> str:
    """Markdown table: dataset rows, Base / New / HM as mean +- std, then the average row(s)."""
    title = (f"### {setting.label} | {setting.trainer} | shots {setting.shots} | "
             f"{setting.config} | {_which_label(setting, which)}")
    lines = [title, "", "| dataset | seeds | Base | New | HM |", "|---|---|---|---|---|"]
    for name, s in rows.items():
        lines.append(f"| {name} | {_seeds(s)} | {_pm(s['base'], s['base_std'])} | "
                     f"{_pm(s['new'], s['new_std'])} | {_pm(s['hm'], s['hm_std'])} |")
    main = {d: rows[d] for d in BASE2NEW_DATASETS if d in rows}
    if len(main) == len(BASE2NEW_DATASETS):
        avg = average_base2new(main)
        lines.append(f"| **Average (11)** | | {_pm(avg['base'])} | {_pm(avg['new'])} | {_pm(avg['hm'])} |")
    if rows and len(main) != len(BASE2NEW_DATASETS):
        avg = average_base2new(rows)
        lines.append(f"| Average over present ({_count(avg['count'])}, not the 11-dataset average) | | "
                     f"{_pm(avg['base'])} | {_pm(avg['new'])} | {_pm(avg['hm'])} |")
    return "\n".join(lines)


def format_cross_table(setting: Setting, rows: dict[str, dict], which: str) -> str:
    """Markdown table: one row per dataset (accuracy mean +- std), then the average (cross-dataset: over
    the targets, the ImageNet source left out)."""
    title = (f"### {setting.label} | {setting.trainer} | shots {setting.shots} | "
             f"{setting.config} | {_which_label(setting, which)}")
    lines = [title, "", "| dataset | seeds | Accuracy |", "|---|---|---|"]
    for name, s in rows.items():
        lines.append(f"| {name} | {_seeds(s)} | {_pm(s['accuracy'], s['accuracy_std'])} |")
    if setting.protocol == "cross":
        targets = [s["accuracy"] for d, s in rows.items() if d != CROSS_SOURCE]
        label = f"Average over targets ({_count(len(targets))}, {CROSS_SOURCE} excluded)"
    else:
        targets = [s["accuracy"] for s in rows.values()]
        label = f"Average ({_count(len(targets))})"
    if len(targets) > 1 or (targets and setting.protocol == "cross"):
        lines.append(f"| {label} | | {_pm(sum(targets) / len(targets))} |")
    return "\n".join(lines)


def _count(n: int) -> str:
    return f"{n} dataset" if n == 1 else f"{n} datasets"


def _which_label(setting: Setting, which: str) -> str:
    if setting.protocol == EVALUATION:
        return "evaluated checkpoint"   # an evaluation record's best and last are the same entry
    return {"best": "best-on-base checkpoint", "last": "last epoch",
            SELECTED_BY_AGREEMENT: "agreement-selected checkpoint (held-out training images)"}.get(which, which)


def format_markdown(groups: list[Group], which: Sequence[str] = ("best", "last")) -> str:
    """All tables as one Markdown document."""
    if not groups:
        return "No results.json files found."
    parts = ["## Results", ""]
    for w in which:
        for setting, rows in build_tables(groups, w):
            fmt = format_base2new_table if setting.base_new else format_cross_table
            parts += [fmt(setting, rows, w), ""]
    selected = [g for g in groups if all(isinstance(run.get(SELECTED_BY_AGREEMENT), dict) for run in g.runs)]
    for setting, rows in build_tables(selected, SELECTED_BY_AGREEMENT):
        fmt = format_base2new_table if setting.base_new else format_cross_table
        parts += [fmt(setting, rows, SELECTED_BY_AGREEMENT), ""]
    return "\n".join(parts).rstrip() + "\n"


CSV_FIELDS = ("protocol", "evaluated", "trainer", "shots", "config", "dataset", "which", "n_seeds", "seeds",
              "base", "base_std", "new", "new_std", "hm", "hm_std", "accuracy", "accuracy_std")
_CSV_NUMBERS = CSV_FIELDS[CSV_FIELDS.index("base"):]


def csv_rows(groups: list[Group], which: Sequence[str] = ("best", "last")) -> list[dict]:
    """One row per (group, which); numbers rounded to 4 decimals, unused columns empty."""
    out = []
    for w in which:
        for setting, rows in build_tables(groups, w):
            for dataset, s in rows.items():
                row = {f: "" for f in CSV_FIELDS}
                row.update(protocol=setting.protocol, evaluated=setting.evaluated, trainer=setting.trainer,
                           shots=setting.shots,
                           config=setting.config, dataset=dataset, which=w, n_seeds=s["n"],
                           seeds=" ".join(str(x) for x in s["seeds"]))
                for k in _CSV_NUMBERS:
                    if k in s:
                        row[k] = round(s[k], 4)
                out.append(row)
    return out


def write_csv(groups: list[Group], path: str | Path, which: Sequence[str] = ("best", "last")) -> Path:
    """Write :func:`csv_rows` to ``path`` (parent folders created)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=CSV_FIELDS)
        writer.writeheader()
        writer.writerows(csv_rows(groups, which))
    return path


# --------------------------------------------------------------------------- CLI

def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", help="output root to search for results.json files")
    parser.add_argument("--which", choices=("best", "last", "both"), default="both",
                        help="best-on-base checkpoint, last epoch, or both (default)")
    parser.add_argument("--csv", metavar="FILE", help="also write the summary as CSV")
    parser.add_argument("--strict", action="store_true", help="fail on an unreadable results.json")
    args = parser.parse_args(argv)
    which = ("best", "last") if args.which == "both" else (args.which,)
    try:
        groups = group_runs(load_results(args.root, strict=args.strict))
    except (FileNotFoundError, ResultsError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(format_markdown(groups, which), end="")
    if args.csv:
        print(f"CSV written to {write_csv(groups, args.csv, which)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
