"""`Datum` (one labelled image) and `DatasetBase` (the split lists every reader returns).

`Datum` must stay importable as ``dassl.data.datasets.base_dataset.Datum`` with the attribute names
``_impath``, ``_label``, ``_domain``, ``_classname``: few-shot caches and ImageNet ``preprocessed.pkl``
files written by the original Dassl pickle that exact dotted path (and those attribute names).
"""
from __future__ import annotations

import math
import os
import pickle
import random
from collections import OrderedDict, defaultdict
from typing import Dict, List, Optional, Sequence, Tuple

from dassl.utils.tools import UserError, read_json, write_json


class MissingImageError(UserError, FileNotFoundError, AssertionError):
    """An image file named by a `Datum` does not exist.

    Original Dassl signals this with a bare ``assert``; this class is both a `FileNotFoundError`
    (what a reader of the code expects) and an `AssertionError` (what old callers may catch).
    """


class Datum:
    """One data instance: image path, integer label, domain index and class name.

    The file must exist when the object is built (as in Dassl); unpickling does not re-check it.
    """

    def __init__(self, impath: str = "", label: int = 0, domain: int = 0, classname: str = ""):
        if not isinstance(impath, str):
            raise TypeError(f"Datum impath must be a str, got {type(impath).__name__}: {impath!r}")
        if not os.path.isfile(impath):
            raise MissingImageError(f'Image file not found: "{impath}"')
        self._impath = impath
        self._label = label
        self._domain = domain
        self._classname = classname

    @property
    def impath(self) -> str:
        return self._impath

    @property
    def label(self) -> int:
        return self._label

    @property
    def domain(self) -> int:
        return self._domain

    @property
    def classname(self) -> str:
        return self._classname

    def __repr__(self) -> str:
        return (f"Datum(impath={self._impath!r}, label={self._label}, domain={self._domain}, "
                f"classname={self._classname!r})")


class _DatumUnpickler(pickle.Unpickler):
    """Unpickles only `Datum` objects and plain containers (few-shot caches, ``preprocessed.pkl``)."""

    def find_class(self, module: str, name: str):
        if name == "Datum" and module == __name__:
            return Datum
        if module in ("builtins", "__builtin__") and name in ("list", "dict", "tuple", "set", "frozenset"):
            return getattr(__import__("builtins"), name)
        if module == "collections" and name in ("OrderedDict", "defaultdict"):
            return OrderedDict if name == "OrderedDict" else defaultdict
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}: only Datum objects are expected")


def load_datum_pickle(fpath: str):
    """Read a pickle of `Datum` lists/dicts (Dassl's few-shot cache format) without running code.

    Any other pickled class is refused with an error naming the file.
    """
    try:
        with open(fpath, "rb") as f:
            return _DatumUnpickler(f).load()
    except pickle.UnpicklingError as exc:
        raise UserError(f'Cannot read "{fpath}": {exc}') from None


def num_base_classes(num_classes: int) -> int:
    """How many of ``num_classes`` sorted labels are base classes: the first ceil(n/2), the rest are new.

    The base/new split of CoOp-style benchmarks; every place that splits classes asks this function.
    """
    return math.ceil(num_classes / 2)


class DatasetBase:
    """The four split lists of a dataset plus the label bookkeeping derived from `train_x`.

    `num_classes` is ``max(label) + 1`` and `lab2cname` / `classnames` come from `train_x` only,
    as in Dassl (when `train_x` is empty they come from `test`, so an evaluation-only reader works).
    `base_classnames` / `new_classnames` default to the first ``ceil(n/2)`` classes and the rest;
    a reader may assign them explicitly (e.g. after base/new subsampling).
    """

    dataset_dir = ""
    domains: List[str] = []
    # Real training images per class after K-shot sampling, ``{"min": int, "max": int}``; None when the
    # reader did no K-shot sampling. Differs from DATASET.NUM_SHOTS when a class has fewer images.
    shots_per_class: Optional[Dict[str, int]] = None

    def __init__(self, train_x: Optional[list] = None, train_u: Optional[list] = None,
                 val: Optional[list] = None, test: Optional[list] = None):
        self._train_x = train_x
        self._train_u = train_u
        self._val = val
        self._test = test
        label_source = train_x if train_x else (test or [])
        self._num_classes = self.get_num_classes(label_source)
        self._lab2cname, self._classnames = self.get_lab2cname(label_source)

    # ----------------------------------------------------------------- properties
    @property
    def train_x(self):
        return self._train_x

    def keep_train_x(self, items: List[Datum]) -> None:
        """Narrow the labelled training list to `items`, a subset of it (e.g. when images are held out for
        model selection). Class names and counts stay those of the whole dataset."""
        known = {id(item) for item in self._train_x}
        if any(id(item) not in known for item in items):
            raise ValueError("keep_train_x takes a subset of the current training items")
        self._train_x = list(items)

    @property
    def train_u(self):
        return self._train_u

    @property
    def val(self):
        return self._val

    @property
    def test(self):
        return self._test

    @property
    def lab2cname(self) -> Dict[int, str]:
        return self._lab2cname

    @property
    def classnames(self) -> List[str]:
        return self._classnames

    @property
    def num_classes(self) -> int:
        return self._num_classes

    @property
    def base_classnames(self) -> List[str]:
        explicit = self.__dict__.get("_base_classnames")
        if explicit is not None:
            return explicit
        return list(self._classnames[: num_base_classes(len(self._classnames))])

    @base_classnames.setter
    def base_classnames(self, names: Sequence[str]) -> None:
        self._base_classnames = list(names)

    @property
    def new_classnames(self) -> List[str]:
        explicit = self.__dict__.get("_new_classnames")
        if explicit is not None:
            return explicit
        return list(self._classnames[num_base_classes(len(self._classnames)):])

    @new_classnames.setter
    def new_classnames(self, names: Sequence[str]) -> None:
        self._new_classnames = list(names)

    # ----------------------------------------------------------------- label helpers
    @staticmethod
    def get_num_classes(data_source: Sequence[Datum]) -> int:
        """``max(label) + 1`` (not the number of distinct labels); 0 for an empty list."""
        if not data_source:
            return 0
        return max(item.label for item in data_source) + 1

    @staticmethod
    def get_lab2cname(data_source: Sequence[Datum]) -> Tuple[Dict[int, str], List[str]]:
        """Return ``(label -> classname, classnames ordered by sorted label)``."""
        mapping = {item.label: item.classname for item in data_source}
        labels = sorted(mapping)
        return {label: mapping[label] for label in labels}, [mapping[label] for label in labels]

    @staticmethod
    def split_dataset_by_label(data_source: Sequence[Datum]) -> Dict[int, List[Datum]]:
        """Group items by label; keys in order of first appearance."""
        groups: Dict[int, List[Datum]] = defaultdict(list)
        for item in data_source:
            groups[item.label].append(item)
        return groups

    @staticmethod
    def split_dataset_by_domain(data_source: Sequence[Datum]) -> Dict[int, List[Datum]]:
        """Group items by domain; keys in order of first appearance."""
        groups: Dict[int, List[Datum]] = defaultdict(list)
        for item in data_source:
            groups[item.domain].append(item)
        return groups

    def is_input_domain_valid(self, input_domains: Sequence[str]) -> None:
        for domain in input_domains:
            if domain not in self.domains:
                raise ValueError(f"Input domain must belong to {self.domains}, but got [{domain}]")

    def check_input_domains(self, source_domains: Sequence[str], target_domains: Sequence[str]) -> None:
        self.is_input_domain_valid(source_domains)
        self.is_input_domain_valid(target_domains)

    # ----------------------------------------------------------------- few-shot sampling
    def generate_fewshot_dataset(self, *data_sources: List[Datum], num_shots: int = -1,
                                 repeat: bool = False):
        """Keep `num_shots` items per class of each source (Dassl's algorithm, step for step).

        Per source: labels in order of first appearance; a class with at least `num_shots` items
        gets ``random.sample(items, num_shots)``; a smaller class gets ``random.choices`` with
        replacement when `repeat`, else all its items. Uses Python's global `random`, so the
        subset is fixed by the seed set before the dataset is built. `num_shots < 1` returns the
        input unchanged. One source -> a list; several -> a list of lists.
        """
        if num_shots < 1:
            return data_sources[0] if len(data_sources) == 1 else data_sources

        print(f"Creating a {num_shots}-shot dataset")
        output = []
        for data_source in data_sources:
            selected: List[Datum] = []
            for items in self.split_dataset_by_label(data_source).values():
                if len(items) >= num_shots:
                    selected.extend(random.sample(items, num_shots))
                elif repeat:
                    selected.extend(random.choices(items, k=num_shots))
                else:
                    selected.extend(items)
            output.append(selected)
        return output[0] if len(output) == 1 else output

    # ----------------------------------------------------------------- base / new classes
    @staticmethod
    def subsample_classes(*args: List[Datum], subsample: str = "all"):
        """Keep the base (first ``ceil(n/2)`` sorted labels) or new (the rest) classes.

        The label set comes from the FIRST list; every list is filtered the same way and relabelled
        to ``0..k-1`` in ascending label order, as new `Datum` objects with domain 0. ``"all"``
        returns `args` untouched (a tuple); otherwise a list of lists (CoOp's behaviour).
        """
        if subsample not in ("all", "base", "new"):
            raise ValueError(f'subsample must be "all", "base" or "new", got {subsample!r}')
        if subsample == "all":
            return args

        labels = sorted({item.label for item in args[0]})
        m = num_base_classes(len(labels))
        print(f"SUBSAMPLE {subsample.upper()} CLASSES!")
        selected = labels[:m] if subsample == "base" else labels[m:]
        relabeler = {label: new_label for new_label, label in enumerate(selected)}

        output = []
        for dataset in args:
            output.append([
                Datum(impath=item.impath, label=relabeler[item.label], classname=item.classname)
                for item in dataset if item.label in relabeler
            ])
        return output

    # ----------------------------------------------------------------- split JSON
    @staticmethod
    def read_split(filepath: str, path_prefix: str) -> Tuple[List[Datum], List[Datum], List[Datum]]:
        """Read a CoOp split JSON (``{"train"|"val"|"test": [[rel_path, label, classname], ...]}``)."""
        print(f"Reading split from {filepath}")
        split = read_json(filepath)
        missing = [key for key in ("train", "val", "test") if key not in split]
        if missing:
            raise ValueError(f"Split file {filepath} lacks the key(s) {missing}")

        def to_datums(entries) -> List[Datum]:
            return [Datum(impath=os.path.join(path_prefix, rel), label=int(label), classname=cname)
                    for rel, label, cname in entries]

        return to_datums(split["train"]), to_datums(split["val"]), to_datums(split["test"])

    @staticmethod
    def save_split(train: Sequence[Datum], val: Sequence[Datum], test: Sequence[Datum],
                   filepath: str, path_prefix: str) -> None:
        """Write a CoOp split JSON with paths relative to `path_prefix` (plain string removal)."""

        def to_entries(items: Sequence[Datum]) -> list:
            entries = []
            for item in items:
                rel = item.impath.replace(path_prefix, "")
                if rel.startswith("/"):
                    rel = rel[1:]
                entries.append((rel, item.label, item.classname))
            return entries

        write_json({"train": to_entries(train), "val": to_entries(val), "test": to_entries(test)},
                   filepath)
        print(f"Saved split to {filepath}")

    @staticmethod
    def split_trainval(trainval: Sequence[Datum], p_val: float = 0.2) -> Tuple[List[Datum], List[Datum]]:
        """Split per class: ``round(n * p_val)`` random items to val, the rest to train (as Dassl does)."""
        p_trn = 1 - p_val
        print(f"Splitting trainval into {p_trn:.0%} train and {p_val:.0%} val")
        by_label: Dict[int, List[int]] = OrderedDict()
        for idx, item in enumerate(trainval):
            by_label.setdefault(item.label, []).append(idx)

        train, val = [], []
        for label, idxs in by_label.items():
            n_val = round(len(idxs) * p_val)
            if n_val <= 0:
                raise ValueError(f"Class {label} has too few items ({len(idxs)}) to hold out a val split")
            random.shuffle(idxs)
            for n, idx in enumerate(idxs):
                (val if n < n_val else train).append(trainval[idx])
        return train, val
