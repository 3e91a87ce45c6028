"""How a reader turns its (train, val, test) splits into train_x / val / test.

- ``None`` (CoOp / PromptSRC semantics): base/new subsampling by ``DATASET.SUBSAMPLE_CLASSES``,
  the real validation split is kept.
- ``"base2novel"`` (PromptKD, transductive): train_x = the train split of ALL classes (labels
  unused by the student); val = test images of the base classes, test = test images of the new
  classes, each relabelled from 0. ``SUBSAMPLE_CLASSES`` does not apply (as in PromptKD).
- ``"base_only"`` (inductive variant of base2novel): train_x = the train split of the BASE classes only
  (the first ceil(n/2) labels, unlabelled for the student), so nothing the student trains on comes from
  a new class; val and test as base2novel. ``SUBSAMPLE_CLASSES`` does not apply. The reader's
  ``base_classnames`` / ``new_classnames`` still name every class, which the trainers need to score new.
- ``"cross"`` (PromptKD): subsample by ``SUBSAMPLE_CLASSES``; val = test = the test split.
"""
from __future__ import annotations

import hashlib
import math
import os
from typing import List, Optional, Sequence, Tuple

from dassl.data.datasets import DatasetBase, Datum, num_base_classes
from dassl.utils import UserError

# The distillation protocols (TRAINER.MODAL); None is the CoOp-style split of supervised trainers.
DISTILL_PROTOCOLS = ("base2novel", "base_only", "cross")
# The protocols scored on base (val) and new (test) classes, whose class split is first ceil(n/2) labels.
BASE_NEW_DISTILL_PROTOCOLS = ("base2novel", "base_only")
PROTOCOLS = (None, *DISTILL_PROTOCOLS)
SUBSAMPLE_CHOICES = ("all", "base", "new")

Items = Optional[List[Datum]]

HOLDOUT_KEY = "TRAINER.PROMPTKD.SELECT_HOLDOUT"


def check_protocol(protocol: Optional[str]) -> None:
    if protocol not in PROTOCOLS:
        raise UserError(f"Unknown data protocol {protocol!r} (TRAINER.MODAL); expected one of "
                        f"{', '.join(repr(p) for p in DISTILL_PROTOCOLS)}, or none for CoOp-style splits.")


def check_subsample(subsample: str) -> None:
    if subsample not in SUBSAMPLE_CHOICES:
        raise UserError(f"DATASET.SUBSAMPLE_CLASSES must be one of {list(SUBSAMPLE_CHOICES)}, got {subsample!r}")


def subsample(train: List[Datum], val: Items, test: Items, which: str) -> Tuple[List[Datum], Items, Items]:
    """Apply `DatasetBase.subsample_classes` to the lists that exist (val/test may be None)."""
    if which == "all":
        return train, val, test
    present = [lst for lst in (val, test) if lst is not None]
    result = DatasetBase.subsample_classes(train, *present, subsample=which)
    out = iter(result[1:])
    return result[0], (next(out) if val is not None else None), (next(out) if test is not None else None)


def apply_protocol(train: List[Datum], val: Items, test: Items, protocol: Optional[str], which: str
                   ) -> Tuple[List[Datum], Items, Items]:
    """Return ``(train_x, val, test)`` for the protocol (see the module docstring)."""
    check_protocol(protocol)
    check_subsample(which)
    if protocol is None:
        return subsample(train, val, test, which)
    if protocol == "cross":
        train, _, test = subsample(train, None, test, which)
        return train, test, test
    # base2novel / base_only
    if which != "all":
        trained = "all classes" if protocol == "base2novel" else "the base classes"
        print(f"Note: DATASET.SUBSAMPLE_CLASSES={which} is ignored by the {protocol} protocol "
              f"(train on {trained}, validate on base, test on new)")
    base_train, base_test = DatasetBase.subsample_classes(train, test, subsample="base")
    _, new_test = DatasetBase.subsample_classes(train, test, subsample="new")
    return (base_train if protocol == "base_only" else train), base_test, new_test


def base_new_classnames(items: List[Datum]) -> Tuple[List[str], List[str]]:
    """Class names of the base (first ceil(n/2) sorted labels) and new classes of `items`."""
    _, classnames = DatasetBase.get_lab2cname(items)
    m = num_base_classes(len(classnames))
    return classnames[:m], classnames[m:]


def check_holdout_fraction(fraction: float) -> float:
    """``SELECT_HOLDOUT`` as a float in [0, 1); a ``UserError`` naming the key otherwise."""
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0.0 <= fraction < 1.0:
        raise UserError(f"{HOLDOUT_KEY} must be a fraction in [0, 1) (0 = off), got {fraction!r}")
    return float(fraction)


def _holdout_rank(seed: int, name: str) -> bytes:
    return hashlib.sha256(f"{int(seed)}:{name}".encode("utf-8")).digest()


def holdout_split(items: Sequence[Datum], fraction: float, seed: int, root: str = ""
                  ) -> Tuple[List[Datum], List[Datum]]:
    """Split training items into ``(kept, held_out)`` for model selection on held-out training images.

    Deterministic: each item is ranked by ``sha256("<seed>:<path>")``, where ``path`` is the image path
    relative to ``root`` (``DATASET.ROOT``; the path as given when it lies outside), so the split depends
    only on the run seed and the images, not on the item order or where the dataset folder sits. The
    ``round(fraction * n)`` lowest-ranked items are held out (at least one, and at least one image stays
    for training); both lists keep the input order. Different seeds hold out different images.
    """
    fraction = check_holdout_fraction(fraction)
    n = len(items)
    if fraction == 0.0:
        return list(items), []
    count = max(1, int(math.floor(fraction * n + 0.5)))
    if count >= n:
        raise UserError(f"{HOLDOUT_KEY} {fraction} would hold out all {n} training images: use a smaller fraction")
    base = os.path.abspath(root) if root else ""

    def name(item: Datum) -> str:
        path = os.path.abspath(item.impath)
        if base and os.path.commonpath([base, path]) == base:
            path = os.path.relpath(path, base)
        return path.replace(os.sep, "/")

    ranked = sorted(range(n), key=lambda i: (_holdout_rank(seed, name(items[i])), i))
    held = set(ranked[:count])
    kept = [item for i, item in enumerate(items) if i not in held]
    held_out = [item for i, item in enumerate(items) if i in held]
    return kept, held_out
