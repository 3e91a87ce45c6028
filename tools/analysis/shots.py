"""Accuracy against shots: curves built from the results that ``tools/parse_results.py`` reads.

``parse_results`` groups the base2novel runs that differ only by seed and summarises each group
(Base, New: mean and population std over seeds; HM: harmonic mean of the mean Base and mean New, with
the std of the per-seed HMs). Here the groups of one dataset and trainer become one curve over shots:

- a curve per (dataset, trainer); when one trainer has several configurations at the same number of
  shots (e.g. an omega sweep in sibling config folders), a curve per configuration instead, labelled
  ``trainer (config)``;
- ``shots`` 0 (or fewer) means the whole training split and is shown as "full";
- a group whose runs were never trained (every run's best epoch is 0: zero-shot CLIP) is a reference,
  drawn as a horizontal line, not a curve;
- only runs whose entries hold Base and New are used (base2novel distillation, and base-to-new runs of
  supervised prompt learners); runs with a single accuracy (cross-dataset, ...) are left out.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Sequence, Tuple

from tools import parse_results
from tools.analysis.plots import shot_order


@dataclass(frozen=True)
class ShotPoint:
    """One number of shots of a curve: the summary of its runs over seeds."""

    shots: int
    seeds: Tuple
    base: float
    base_std: float
    new: float
    new_std: float
    hm: float
    hm_std: float


@dataclass
class ShotCurve:
    """Accuracy of one trainer (and configuration) on one dataset against shots."""

    dataset: str
    label: str
    reference: bool = False  # untrained runs (zero-shot): one level, drawn across the plot
    points: List[ShotPoint] = field(default_factory=list)


def _shots(value: str):
    try:
        return int(value)
    except ValueError:
        return None


def _is_untrained(group) -> bool:
    return all(isinstance(run.get("best"), dict) and run["best"].get("epoch") == 0 for run in group.runs)


def has_base_and_new(record: dict) -> bool:
    """Whether a results record's entries hold Base and New accuracies (not a single accuracy)."""
    entry = record.get("best")
    return isinstance(entry, dict) and "base" in entry and "new" in entry


def shot_curves(records: Sequence[dict], which: str = "best") -> Dict[str, List[ShotCurve]]:
    """Dataset -> its curves (trained first, then references), from loaded results records."""
    groups = parse_results.group_runs([record for record in records if has_base_and_new(record)])
    by_trainer: Dict[Tuple[str, str, bool], list] = {}
    for group in groups:
        shots = _shots(group.key.shots)
        if shots is None:
            print(f"warning: skipping {group.key.trainer} on {group.key.dataset}: shots {group.key.shots!r} is "
                  "not a number")
            continue
        key = (group.key.dataset, group.key.trainer, _is_untrained(group))
        by_trainer.setdefault(key, []).append((shots, group))
    curves: Dict[str, List[ShotCurve]] = {}
    for (dataset, trainer, untrained), members in sorted(by_trainer.items(), key=lambda item: (item[0][0], item[0][2],
                                                                                                 item[0][1])):
        shot_values = [shots for shots, _ in members]
        split_by_config = len(shot_values) != len(set(shot_values))
        parts: Dict[str, list] = {}
        for shots, group in members:
            label = f"{trainer} ({group.key.config})" if split_by_config else trainer
            parts.setdefault(label, []).append((shots, group))
        for label, part in parts.items():
            if untrained:
                label = f"{label}, no training"
            curve = ShotCurve(dataset=dataset, label=label, reference=untrained)
            for shots, group in sorted(part, key=lambda item: shot_order(item[0])):
                s = parse_results.summarize_base2new(group, which)
                curve.points.append(ShotPoint(shots=shots, seeds=tuple(s["seeds"]), base=s["base"],
                                              base_std=s["base_std"], new=s["new"], new_std=s["new_std"],
                                              hm=s["hm"], hm_std=s["hm_std"]))
            curves.setdefault(dataset, []).append(curve)
    return curves


def format_curves(curves_by_dataset: Dict[str, List[ShotCurve]]) -> str:
    """The curves as text: one line per point (what the figure shows)."""
    lines = []
    for dataset, curves in curves_by_dataset.items():
        lines.append(f"{dataset}:")
        for curve in curves:
            for p in curve.points:
                lines.append(f"  {curve.label:<28} shots {p.shots if p.shots > 0 else 'full':>4}  seeds "
                             f"{','.join(str(s) for s in p.seeds):<8} Base {p.base:6.2f} +- {p.base_std:5.2f}  "
                             f"New {p.new:6.2f} +- {p.new_std:5.2f}  HM {p.hm:6.2f} +- {p.hm_std:5.2f}")
    return "\n".join(lines)
