"""Split-building fallbacks shared by several readers (used only when the split JSON is missing).

All randomness goes through Python's global `random` (seeded per reader, see `CoOpReader`), so a
fallback split is reproducible for a given seed, as in CoOp.
"""
from __future__ import annotations

import os
import random
from typing import Dict, List, Optional, Sequence, Tuple

from dassl.data.datasets import Datum
from dassl.utils import UserError

from .layout import doc_hint, sorted_files, sorted_subdirs


def split_items_by_ratio(paths: List[str], label: int, classname: str, p_trn: float, p_val: float,
                         what: str, dataset_name: str) -> Tuple[List[Datum], List[Datum], List[Datum]]:
    """Shuffle one class's images and cut them into round(p_trn*n) / round(p_val*n) / rest."""
    random.shuffle(paths)
    n_total = len(paths)
    n_train = round(n_total * p_trn)
    n_val = round(n_total * p_val)
    n_test = n_total - n_train - n_val
    if min(n_train, n_val, n_test) <= 0:
        raise UserError(f"{dataset_name}: {what} has {n_total} image(s), too few to split into "
                        f"train/val/test ({p_trn:.0%}/{p_val:.0%}/rest); at least 4 are needed. "
                        + doc_hint(dataset_name))

    def make(chunk: List[str]) -> List[Datum]:
        return [Datum(impath=p, label=label, classname=classname) for p in chunk]

    return make(paths[:n_train]), make(paths[n_train:n_train + n_val]), make(paths[n_train + n_val:])


def split_class_folders(image_dir: str, dataset_name: str, p_trn: float = 0.5, p_val: float = 0.2,
                        ignored: Sequence[str] = (), new_cnames: Optional[Dict[str, str]] = None
                        ) -> Tuple[List[Datum], List[Datum], List[Datum]]:
    """CoOp's generic folder splitter (DTD's ``read_and_split_data``; also Caltech101, EuroSAT, Food101).

    Class folders sorted case-sensitively (minus `ignored`) give labels; each folder's files are
    shuffled and cut 50/20/30; `new_cnames` renames folders to class names. Deliberate fix: file
    names are sorted before shuffling (CoOp used the filesystem's listing order), so the split
    is the same on every machine.
    """
    print(f"Splitting into {p_trn:.0%} train, {p_val:.0%} val, and {1 - p_trn - p_val:.0%} test")
    categories = [c for c in sorted_subdirs(image_dir) if c not in set(ignored)]
    if not categories:
        raise UserError(f"{dataset_name}: no class folders found in {image_dir}. " + doc_hint(dataset_name))
    new_cnames = new_cnames or {}
    train, val, test = [], [], []
    for label, category in enumerate(categories):
        folder = os.path.join(image_dir, category)
        paths = [os.path.join(folder, name) for name in sorted_files(folder)]
        classname = new_cnames.get(category, category)
        parts = split_items_by_ratio(paths, label, classname, p_trn, p_val, f"class folder {folder}", dataset_name)
        for bucket, part in zip((train, val, test), parts):
            bucket.extend(part)
    return train, val, test
