"""`CoOpReader`: the steps every benchmark reader shares, so each reader only says where its
files are and (optionally) how to rebuild a missing split.

Constructor order, as in CoOp's readers: resolve folders -> read the split JSON (or build it from the
raw annotations and save it) -> K-shot sampling with a JSON cache -> protocol / base-new subsampling.
The saved split and the few-shot cache go to the dataset folder when it is writable, else to a cache
folder (`cache_location`), so a read-only dataset root works.

Randomness: when ``SEED >= 0`` the reader re-seeds Python's global `random` with it before any
sampling. `train.py` has just seeded it with the same value and nothing consumes it in between,
so this gives exactly CoOp's state (same seed -> same few-shot images as CoOp-family code), and
it makes a reader deterministic on its own (tests, tools). ``SEED < 0`` leaves `random` alone.
"""
from __future__ import annotations

import os
import random
from typing import List, Optional, Tuple

from dassl.data.datasets import DatasetBase, Datum
from dassl.utils import UserError

from .cache_location import CacheLocation
from .layout import dataset_root, doc_hint, require_dir
from .protocols import apply_protocol, base_new_classnames, check_protocol, check_subsample
from .shot_counts import short_classes_line, shots_per_class
from .split_files import (check_sample_within, fewshot_cache_name, read_fewshot_cache, read_split_json,
                          write_fewshot_cache, write_split_json)

Splits = Tuple[List[Datum], Optional[List[Datum]], Optional[List[Datum]]]


class CoOpReader(DatasetBase):
    """Base class of the benchmark readers; subclasses set the class attributes below."""

    dataset_dir = ""            # folder under DATASET.ROOT; the instance attribute becomes its absolute path
    image_subdir = ""           # image folder inside dataset_dir ("" = dataset_dir itself)
    split_file: Optional[str] = None   # split JSON file name inside dataset_dir, None if the dataset has none
    split_paths_from_dataset_dir = False  # StanfordCars: split paths are relative to dataset_dir
    val_is_test = False         # ImageNet: the val split is the test split
    uses_few_shot = True        # the ImageNet variants are test-only and ignore NUM_SHOTS

    def __init__(self, cfg, protocol: Optional[str] = None):
        check_protocol(protocol)
        check_subsample(cfg.DATASET.SUBSAMPLE_CLASSES)
        self.name = type(self).__name__
        folder = os.path.join(dataset_root(cfg), type(self).dataset_dir)
        self.dataset_dir = require_dir(folder, "dataset folder", self.name)
        self.image_dir = os.path.join(self.dataset_dir, self.image_subdir) if self.image_subdir else self.dataset_dir
        require_dir(self.image_dir, "image folder", self.name)
        self.split_path = os.path.join(self.dataset_dir, self.split_file) if self.split_file else None
        self.split_fewshot_dir = os.path.join(self.dataset_dir, "split_fewshot")
        self.cache_location = CacheLocation(cfg, self.dataset_dir, self.name)

        if cfg.SEED >= 0:
            random.seed(cfg.SEED)
        train, val, test = self.read_splits(cfg.SEED)
        base_names, new_names = base_new_classnames(train)
        num_shots = cfg.DATASET.NUM_SHOTS if self.uses_few_shot else 0
        if num_shots >= 1:
            train, val = self.few_shot(train, val, num_shots, cfg.SEED)
        train_x, val, test = apply_protocol(train, val, test, protocol, cfg.DATASET.SUBSAMPLE_CLASSES)
        if val is None and self.val_is_test:
            val = test
        super().__init__(train_x=train_x, val=val, test=test)
        self.base_classnames = base_names
        self.new_classnames = new_names
        if num_shots >= 1:
            self.record_shots(train_x, num_shots)

    # ------------------------------------------------------------------ split
    @property
    def split_prefix(self) -> str:
        return self.dataset_dir if self.split_paths_from_dataset_dir else self.image_dir

    def read_splits(self, seed: int) -> Splits:
        """Full ``(train, val, test)``: the split JSON, or the fallback split (then saved as JSON).

        A split rebuilt here is saved where `self.cache_location` puts derived files (the dataset folder
        when writable), so later runs, whatever their seed, read that same split.
        """
        if self.split_path is None:
            return self.build_split()
        found = self.cache_location.find(self.split_file)
        if found == self.split_path:
            return read_split_json(found, self.split_prefix, self.name)
        if found is not None:
            print(f"Warning: {self.name}: {self.split_path} not found; reading the split this code rebuilt from "
                  f"the raw files, {found}. It may differ from the published split (numbers not comparable "
                  f"to papers): put CoOp's {self.split_file} in {self.dataset_dir} to use it.")
            return read_split_json(found, self.split_prefix, self.name)
        try:
            train, val, test = self.build_split()
        except UserError as exc:
            raise UserError(f"{self.name}: split file not found: expected a file at {self.split_path}, "
                            f"and it cannot be rebuilt from the raw annotations ({exc})") from None
        print(f"Warning: {self.name}: split file {self.split_path} not found; rebuilt the split from the raw "
              f"annotations or class folders (SEED {seed}). It may differ from the published split (numbers not "
              f"comparable to papers): put CoOp's {self.split_file} in {self.dataset_dir} to use it.")
        self.cache_location.write(self.split_file,
                                  lambda path: write_split_json(train, val, test, path, self.split_prefix))
        return train, val, test

    def build_split(self) -> Splits:
        """Build the split from the raw files; readers whose dataset has a fallback override this."""
        raise UserError(f"{self.name} has no fallback to build its split. " + doc_hint(self.name))

    # ------------------------------------------------------------------ few-shot
    def few_shot(self, train: List[Datum], val: Optional[List[Datum]], num_shots: int, seed: int
                 ) -> Tuple[List[Datum], Optional[List[Datum]]]:
        """K-shot train and min(K, 4)-shot val (``num_shots >= 1``), cached as JSON.

        The cache is looked up in the dataset folder, then in the cache folder (`self.cache_location`);
        a new sample is written where `self.cache_location` puts new files. Where it is stored does not
        change its content, and reading it gives exactly the sample that was written.
        """
        name = fewshot_cache_name(num_shots, seed)
        path = self.cache_location.find(name)
        if path is not None:
            cached = read_fewshot_cache(path, self.dataset_dir, self.name)
            if val is not None and "val" not in cached:
                raise UserError(f"{self.name}: few-shot cache {path} has no 'val' list; delete it to rebuild it.")
            check_sample_within(cached["train"], train, path, "train", self.name)
            if val is not None:
                check_sample_within(cached["val"], val, path, "val", self.name)
            return cached["train"], (cached["val"] if val is not None else None)
        train = self.generate_fewshot_dataset(train, num_shots=num_shots)
        if val is not None:
            val = self.generate_fewshot_dataset(val, num_shots=min(num_shots, 4))
        self.cache_location.write(name, lambda path: write_fewshot_cache(path, self.dataset_dir, train, val))
        return train, val

    def record_shots(self, train_x: List[Datum], num_shots: int) -> None:
        """Set `shots_per_class` from the training items and warn when a class has fewer than K."""
        self.shots_per_class = shots_per_class(train_x)
        line = short_classes_line(train_x, num_shots, self.name)
        if line:
            print(line)
