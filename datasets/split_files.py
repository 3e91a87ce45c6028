"""Read and write CoOp split JSON files (``split_zhou_<Name>.json``) and our few-shot cache.

Split JSON: ``{"train"|"val"|"test": [[relative_impath, label, classname], ...]}`` with paths
relative to a reader-specific prefix (the image folder for most readers, the dataset folder for
StanfordCars), as CoOp writes them. Every referenced file is checked before any `Datum` is built, so
a broken split reports all missing files at once.
"""
from __future__ import annotations

import os
from typing import Dict, List, Optional, Sequence, Tuple

from dassl.data.datasets import Datum
from dassl.utils import UserError, read_json, write_json

from .layout import check_files_exist, doc_hint, relative_to

Entry = Tuple[str, int, str]
SPLIT_KEYS = ("train", "val", "test")


def _parse_entries(entries, source: str, key: str, dataset_name: str) -> List[Entry]:
    if not isinstance(entries, list):
        raise UserError(f"{dataset_name}: {source}: '{key}' must be a list of [path, label, classname]. "
                        + doc_hint(dataset_name))
    parsed = []
    for index, entry in enumerate(entries):
        if not (isinstance(entry, (list, tuple)) and len(entry) == 3):
            raise UserError(f"{dataset_name}: {source}: entry {index} of '{key}' is {entry!r}, "
                            "expected [relative_path, label, classname]. " + doc_hint(dataset_name))
        rel, label, classname = entry
        parsed.append((str(rel), int(label), str(classname)))
    return parsed


def entries_to_items(entries: Sequence[Entry], prefix: str) -> List[Datum]:
    """Build `Datum`s from ``(relative_path, label, classname)`` (files must exist)."""
    return [Datum(impath=os.path.join(prefix, rel), label=label, classname=classname)
            for rel, label, classname in entries]


def check_entries_exist(entries: Sequence[Entry], prefix: str, source: str, dataset_name: str) -> None:
    check_files_exist([os.path.join(prefix, rel) for rel, _, _ in entries], source, dataset_name)


def items_to_entries(items: Sequence[Datum], prefix: str) -> List[Entry]:
    return [(relative_to(item.impath, prefix), item.label, item.classname) for item in items]


def read_split_json(path: str, prefix: str, dataset_name: str) -> Tuple[List[Datum], List[Datum], List[Datum]]:
    """Read a CoOp split JSON; returns ``(train, val, test)`` lists of `Datum`."""
    print(f"Reading split from {path}")
    split = read_json(path)
    if not isinstance(split, dict) or any(key not in split for key in SPLIT_KEYS):
        raise UserError(f"{dataset_name}: split file {path} must be a JSON object with keys "
                        f"'train', 'val' and 'test'. " + doc_hint(dataset_name))
    entries = [_parse_entries(split[key], path, key, dataset_name) for key in SPLIT_KEYS]
    check_entries_exist([e for part in entries for e in part], prefix, f"split file {path}", dataset_name)
    train, val, test = (entries_to_items(part, prefix) for part in entries)
    return train, val, test


def write_split_json(train: Sequence[Datum], val: Sequence[Datum], test: Sequence[Datum],
                     path: str, prefix: str) -> None:
    """Write a CoOp-format split JSON (atomically; indent 4, Dassl separators)."""
    write_json({key: items_to_entries(items, prefix) for key, items in zip(SPLIT_KEYS, (train, val, test))}, path)
    print(f"Saved split to {path}")


# --------------------------------------------------------------------------- few-shot cache
FEWSHOT_FORMAT = "ame-fewshot-v1"


def fewshot_cache_name(num_shots: int, seed: int) -> str:
    """``split_fewshot/shot_{K}-seed_{SEED}.json``: the cache file's path relative to the folder holding it
    (Dassl's names, but JSON instead of Dassl's pickle)."""
    return os.path.join("split_fewshot", f"shot_{num_shots}-seed_{seed}.json")


def read_fewshot_cache(path: str, dataset_dir: str, dataset_name: str) -> Dict[str, List[Datum]]:
    """Load a cache written by :func:`write_fewshot_cache`; paths are relative to `dataset_dir`."""
    print(f"Loading preprocessed few-shot data from {path}")
    data = read_json(path)
    if not isinstance(data, dict) or data.get("format") != FEWSHOT_FORMAT or "train" not in data:
        raise UserError(f"{dataset_name}: {path} is not a few-shot cache written by this code "
                        f"(expected \"format\": \"{FEWSHOT_FORMAT}\"). Delete it to rebuild it.")
    out = {}
    for key in ("train", "val"):
        if key in data:
            entries = _parse_entries(data[key], path, key, dataset_name)
            try:
                check_entries_exist(entries, dataset_dir, f"few-shot cache {path}", dataset_name)
            except UserError as exc:
                raise UserError(f"{exc}\nIf the images moved, delete {path} to sample again.") from None
            out[key] = entries_to_items(entries, dataset_dir)
    return out


def check_sample_within(sample: Sequence[Datum], split: Sequence[Datum], path: str, part: str,
                        dataset_name: str) -> None:
    """Refuse a cached sample with items that are not in the split it claims to come from.

    A cache outlives changes to the dataset (a split file added or re-rendered later, a cache folder
    shared by mistake); a sample from another split would silently change what a run trains on.
    """
    known = {(item.impath, item.label, item.classname) for item in split}
    foreign = [item for item in sample if (item.impath, item.label, item.classname) not in known]
    if foreign:
        raise UserError(f"{dataset_name}: few-shot cache {path} lists {len(foreign)} {part} image(s) that are not "
                        f"in the current {part} split (e.g. {foreign[0].impath}, label {foreign[0].label}): it was "
                        "sampled from another split. Delete it to sample again.")


def write_fewshot_cache(path: str, dataset_dir: str, train: Sequence[Datum],
                        val: Optional[Sequence[Datum]]) -> None:
    """Write the sampled items (atomically) with paths relative to the dataset folder."""
    payload = {"format": FEWSHOT_FORMAT, "train": items_to_entries(train, dataset_dir)}
    if val is not None:
        payload["val"] = items_to_entries(val, dataset_dir)
    write_json(payload, path)
    print(f"Saving preprocessed few-shot data to {path}")


def build_items(records: Sequence[Entry], source: str, dataset_name: str) -> List[Datum]:
    """`Datum`s from ``(absolute_path, label, classname)`` records read from an annotation file,
    after checking that every image exists (one error listing the missing ones)."""
    check_files_exist([path for path, _, _ in records], source, dataset_name)
    return [Datum(impath=path, label=label, classname=classname) for path, label, classname in records]
