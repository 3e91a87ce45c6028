"""Opt-in cache of the frozen teacher's per-image features (``TRAINER.PROMPTKD.CACHE_TEACHER_FEATURES``).

Why: the teacher's image tower is frozen and, with a deterministic training transform, sees exactly the
same tensor for a given image in every epoch, yet it is the most expensive part of a distillation step.
With the key on, each training image goes through the teacher once; later epochs (and later runs in the
same process with the same teacher and data, e.g. a benchmark's seeds and omegas) reuse the result.

What is stored: the teacher's normalised image features per image path (``batch["impath"]``), not the
logits themselves. The logits are then ``Teacher.logits_from_features(features, class_vectors)``: the
very computation ``Teacher.logits`` does after its image forward, so the result is the same. The class
set is applied after the cache, with the calling run's class vectors: a base_only run (logits over the
base classes only) that reuses features a base2novel run cached gets exactly its own base-class logits,
never another run's logits, so the class set is not (and need not be) part of the keys.

Exactness needs a deterministic training transform: a random op in ``INPUT.TRANSFORMS`` is refused with
a ``UserError`` naming it. Images are assumed not to change on disk while the process lives.

The store is module-level, keyed by everything that determines the teacher's image features (the
teacher's checkpoint and CLIP weights files, as the teacher records them, by path, size and mtime;
dataset name and root; the INPUT keys of the transform; precision; device). At most ``MAX_STORES`` keys are kept (least recently used dropped).

The disk cache (``TRAINER.PROMPTKD.TEACHER_CACHE_DIR``, written by ``tools/cache_teacher.py``) extends
this to random augmentation and to runs in other processes: with seeded augmentation
(``DATALOADER.SEEDED_AUGMENTATION``) the view of training image i in epoch e is a function of
(seed, e, i), so the teacher's features of every view can be computed once for E epochs and read by every
run with the same teacher, data and augmentation key (PromptKD vs PromptKD_RSM, an omega sweep, reruns).
One folder holds one key (``teacher_cache.json``) and one file per epoch (``epoch_E.pt``: features
[N_train, D] by data index, and which rows are filled); with a deterministic transform the features do
not depend on the epoch and a single ``epoch_all.pt`` serves every epoch (the in-memory cache's case).
A run refuses a folder whose key differs from its own (a changed checkpoint, another seed, other INPUT
keys, ...), naming the differing fields. Rows missing from the files are computed by the teacher.
"""
from __future__ import annotations

import hashlib
import json
import os
from collections import OrderedDict
from typing import Dict, List, Optional, Sequence, Tuple

import torch

from dassl.data.image_cache import INPUT_KEYS, file_identity
from dassl.utils import UserError
from dassl.utils.torchtools import atomic_torch_save, atomic_write_text

CONFIG_KEY = "TRAINER.PROMPTKD.CACHE_TEACHER_FEATURES"
MAX_STORES = 2

_stores: "OrderedDict[tuple, Dict[str, torch.Tensor]]" = OrderedDict()


def _identity(name_or_path: str) -> Tuple:
    """(absolute path, size, mtime) of an existing file, so a rewritten file gets a new key; else the name."""
    return file_identity(name_or_path) or (name_or_path,)


def cache_key(cfg, teacher, device: torch.device) -> tuple:
    """Everything that determines ``teacher``'s features of a training image, as a hashable tuple."""
    inputs = tuple((k, str(cfg.INPUT[k])) for k in INPUT_KEYS)
    return (_identity(teacher.checkpoint), _identity(teacher.weights), cfg.DATASET.NAME,
            os.path.abspath(cfg.DATASET.ROOT), inputs, cfg.TRAINER.PROMPTKD.PREC, str(device))


def store_for(key: tuple) -> Dict[str, torch.Tensor]:
    """The (possibly empty) per-image store of ``key``; keeps at most ``MAX_STORES`` stores."""
    if key in _stores:
        _stores.move_to_end(key)
    else:
        _stores[key] = {}
        while len(_stores) > MAX_STORES:
            _stores.popitem(last=False)
    return _stores[key]


def clear() -> None:
    """Forget every cached feature (tests; freeing memory)."""
    _stores.clear()


class TeacherOutputCache:
    """A teacher's logits for a batch, running its image tower only on images not seen before."""

    def __init__(self, teacher, store: Dict[str, torch.Tensor]) -> None:
        self.teacher = teacher
        self.store = store
        self.computed = 0  # images that went through the teacher's image tower in this run

    def logits(self, image: torch.Tensor, keys: Sequence[str],
               class_vectors: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Teacher logits of ``image`` [B, ...] whose rows are the images named by ``keys``, over
        ``class_vectors`` (default: all the teacher's classes)."""
        missing = [i for i, key in enumerate(keys) if key not in self.store]
        if missing:
            if len(missing) < len(keys):
                image = image.index_select(0, torch.tensor(missing, device=image.device))
            features = self.teacher.image_features(image)
            for row, i in enumerate(missing):
                self.store[keys[i]] = features[row]
            self.computed += len(missing)
        features = torch.stack([self.store[key] for key in keys])
        return self.teacher.logits_from_features(features, class_vectors)


# --------------------------------------------------------------------------- disk cache
DIR_KEY = "TRAINER.PROMPTKD.TEACHER_CACHE_DIR"
DTYPE_KEY = "TRAINER.PROMPTKD.TEACHER_CACHE_DTYPE"
STORE_DTYPES = {"fp16": torch.float16, "fp32": torch.float32}
META_FILE = "teacher_cache.json"
ALL_EPOCHS = "all"  # the epoch label of a deterministic transform's features


def store_dtype(cfg) -> torch.dtype:
    """The storage dtype named by ``TEACHER_CACHE_DTYPE`` (a ``UserError`` for anything else)."""
    name = cfg.TRAINER.PROMPTKD.TEACHER_CACHE_DTYPE
    if name not in STORE_DTYPES:
        raise UserError(f"{DTYPE_KEY} must be one of {list(STORE_DTYPES)}, got {name!r}")
    return STORE_DTYPES[name]


def disk_cache_key(cfg, teacher, device: torch.device, augmentation_seed: Optional[int],
                   impaths: Sequence[str]) -> dict:
    """What determines the teacher's features of every training view, as a JSON-able dict.

    ``augmentation_seed`` is the seeded data's base seed, or None for a deterministic transform (the
    features then do not depend on seed or epoch). The training list enters by count and hash, so a
    changed split is refused too (a base_only run's list of base-class images, or a list without the
    held-out images of ``SELECT_HOLDOUT``, is another list than base2novel's). The class set is not part
    of the key: the files hold image features, and each run applies its own class vectors.
    """
    return {
        "checkpoint": list(_identity(teacher.checkpoint)),
        "weights": list(_identity(teacher.weights)),
        "dataset": cfg.DATASET.NAME,
        "root": os.path.abspath(cfg.DATASET.ROOT),
        "input": {k: str(cfg.INPUT[k]) for k in INPUT_KEYS},
        "precision": cfg.TRAINER.PROMPTKD.PREC,
        "device": torch.device(device).type,
        "augmentation": "deterministic" if augmentation_seed is None else f"seeded {int(augmentation_seed)}",
        "train_images": len(impaths),
        "train_list_sha256": hashlib.sha256("\n".join(impaths).encode("utf-8")).hexdigest(),
    }


class TeacherFeatureFiles:
    """One cache folder: its key (``teacher_cache.json``) and one feature file per epoch."""

    def __init__(self, folder: str, key: dict) -> None:
        self.folder = folder
        self.key = json.loads(json.dumps(key))  # the form it takes after a round trip through the file
        self.deterministic = key["augmentation"] == "deterministic"

    @property
    def meta_path(self) -> str:
        return os.path.join(self.folder, META_FILE)

    def stored_key(self) -> Optional[dict]:
        if not os.path.isfile(self.meta_path):
            return None
        with open(self.meta_path, encoding="utf-8") as f:
            return json.load(f)["key"]

    def check_key(self) -> bool:
        """True when the folder holds this key's cache, False when it holds none; a ``UserError`` when it
        holds another key's (naming the fields that differ)."""
        stored = self.stored_key()
        if stored is None:
            return False
        differing = sorted(k for k in set(stored) | set(self.key) if stored.get(k) != self.key.get(k))
        if differing:
            detail = "; ".join(f"{k}: cache {stored.get(k)!r}, this run {self.key.get(k)!r}" for k in differing)
            raise UserError(f"{DIR_KEY} {self.folder} holds the teacher features of another teacher / data / "
                            f"augmentation ({detail}); rebuild it with tools/cache_teacher.py and this run's "
                            f"arguments, or point {DIR_KEY} at another folder")
        return True

    def write_key(self, dtype: torch.dtype) -> None:
        atomic_write_text(json.dumps({"key": self.key, "dtype": str(dtype)}, indent=1), self.meta_path)

    def label(self, epoch: int):
        return ALL_EPOCHS if self.deterministic else int(epoch)

    def epoch_path(self, epoch: int) -> str:
        return os.path.join(self.folder, f"epoch_{self.label(epoch)}.pt")

    def read_epoch(self, epoch: int) -> Optional[dict]:
        """``{"features": [N, D], "filled": [N] bool, "dtype": the teacher's own dtype}``, or None."""
        path = self.epoch_path(epoch)
        if not os.path.isfile(path):
            return None
        return torch.load(path, map_location="cpu")

    def write_epoch(self, epoch: int, features: torch.Tensor, filled: torch.Tensor, dtype: torch.dtype,
                    teacher_dtype: torch.dtype) -> None:
        """Store one epoch's features in ``dtype`` (atomic; rank 0 only under several processes)."""
        atomic_torch_save({"features": features.to(dtype), "filled": filled,
                           "dtype": str(teacher_dtype).replace("torch.", "")}, self.epoch_path(epoch))

    def epochs(self) -> List[str]:
        """The epoch labels with a file."""
        if not os.path.isdir(self.folder):
            return []
        return sorted(name[len("epoch_"):-len(".pt")] for name in os.listdir(self.folder)
                      if name.startswith("epoch_") and name.endswith(".pt"))


class DiskTeacherCache:
    """A run's teacher logits read from a cache folder: one epoch's features in memory at a time; a batch
    with any row missing from the files goes through the teacher instead."""

    def __init__(self, teacher, files: TeacherFeatureFiles) -> None:
        self.teacher = teacher
        self.files = files
        self._label = None
        self._epoch: Optional[dict] = None
        self.computed = 0  # images that went through the teacher's image tower in this run
        self.read = 0  # images whose features came from the files

    def _load(self, epoch: int) -> Optional[dict]:
        label = self.files.label(epoch)
        if label != self._label:
            self._epoch = None  # drop the previous epoch before reading the next one
            self._epoch = self.files.read_epoch(epoch)
            self._label = label
        return self._epoch

    def logits(self, image: torch.Tensor, index: torch.Tensor, epoch: int,
               class_vectors: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Teacher logits of ``image`` [B, ...], the training views of data indices ``index`` in ``epoch``,
        over ``class_vectors`` (default: all the teacher's classes)."""
        stored = self._load(epoch)
        index = torch.as_tensor(index, dtype=torch.long)
        if stored is None or not bool(stored["filled"][index].all()):
            self.computed += len(index)
            return self.teacher.logits(image, class_vectors)
        self.read += len(index)
        dtype = getattr(torch, stored["dtype"])
        features = stored["features"][index].to(device=image.device, dtype=dtype)
        return self.teacher.logits_from_features(features, class_vectors)
