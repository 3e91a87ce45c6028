"""How a reader turns its (train, val, test) splits into train_x / val / test.

- ``None`` (CoOp / PromptSRC semantics): base/new subsampling by ``DATASET.SUBSAMPLE_CLASSES``,
  the real validation split is kept.
- ``"base2novel"`` (PromptKD, transductive): train_x = the train split of ALL classes (labels
  unused by the student); val = test images of the base classes, test = test images of the new
  classes, each relabelled from 0. ``SUBSAMPLE_CLASSES`` does not apply (as in PromptKD).
- ``"cross"`` (PromptKD): subsample by ``SUBSAMPLE_CLASSES``; val = test = the test split.
"""
from __future__ import annotations

from typing import List, Optional, Tuple

from dassl.data.datasets import DatasetBase, Datum, num_base_classes
from dassl.utils import UserError

# The distillation protocols (TRAINER.MODAL); None is the CoOp-style split of supervised trainers.
DISTILL_PROTOCOLS = ("base2novel", "cross")
PROTOCOLS = (None, *DISTILL_PROTOCOLS)
SUBSAMPLE_CHOICES = ("all", "base", "new")

Items = Optional[List[Datum]]


def check_protocol(protocol: Optional[str]) -> None:
    if protocol not in PROTOCOLS:
        raise UserError(f"Unknown data protocol {protocol!r} (TRAINER.MODAL); expected one of "
                        "'base2novel', 'cross', or none for CoOp-style splits.")


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
    # base2novel
    if which != "all":
        print(f"Note: DATASET.SUBSAMPLE_CLASSES={which} is ignored by the base2novel protocol "
              "(train on all classes, validate on base, test on new)")
    _, base_test = DatasetBase.subsample_classes(train, test, subsample="base")
    _, new_test = DatasetBase.subsample_classes(train, test, subsample="new")
    return train, base_test, new_test


def base_new_classnames(items: List[Datum]) -> Tuple[List[str], List[str]]:
    """Class names of the base (first ceil(n/2) sorted labels) and new classes of `items`."""
    _, classnames = DatasetBase.get_lab2cname(items)
    m = num_base_classes(len(classnames))
    return classnames[:m], classnames[m:]
