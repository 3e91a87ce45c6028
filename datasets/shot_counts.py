"""How many training images each class really has after K-shot sampling.

Dassl's sampler keeps every image of a class that has fewer than K (``DATASET.NUM_SHOTS``), so a
"16-shot" run may train on fewer images for some classes. The readers say so in one line and expose
the real counts as ``dataset.shots_per_class`` (``{"min": int, "max": int}``) for the results file.
"""
from __future__ import annotations

from collections import Counter
from typing import Dict, Sequence

from dassl.data.datasets import Datum

# How many short classes the warning names.
MAX_NAMED = 5


def shots_per_class(items: Sequence[Datum]) -> Dict[str, int]:
    """``{"min": fewest, "max": most}`` images per class in `items` (both 0 for an empty list)."""
    counts = Counter(item.label for item in items)
    if not counts:
        return {"min": 0, "max": 0}
    return {"min": min(counts.values()), "max": max(counts.values())}


def short_classes_line(items: Sequence[Datum], num_shots: int, dataset_name: str) -> str:
    """One warning line naming the classes of `items` with fewer than `num_shots` images, or "" if none."""
    counts = Counter(item.label for item in items)
    names = {item.label: item.classname for item in items}
    short = [label for label, count in counts.items() if count < num_shots]
    short.sort(key=lambda label: (counts[label], label))  # fewest images first
    if not short:
        return ""
    shown = ", ".join(f"{names[label]!r} {counts[label]}" for label in short[:MAX_NAMED])
    more = f", ... and {len(short) - MAX_NAMED} more" if len(short) > MAX_NAMED else ""
    real = shots_per_class(items)
    return (f"Warning: {dataset_name}: DATASET.NUM_SHOTS {num_shots} is more than {len(short)} of {len(counts)} "
            f"classes have; they train on all their images: {shown}{more} "
            f"(training images per class: min {real['min']}, max {real['max']})")
