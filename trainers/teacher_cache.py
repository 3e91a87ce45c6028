"""Opt-in cache of the frozen teacher's per-image features (``TRAINER.PROMPTKD.CACHE_TEACHER_FEATURES``).

Why: the teacher's image tower is frozen and, with a deterministic training transform, sees exactly the
same tensor for a given image in every epoch, yet it is the most expensive part of a distillation step.
With the key on, each training image goes through the teacher once; later epochs (and later runs in the
same process with the same teacher and data, e.g. a benchmark's seeds and omegas) reuse the result.

What is stored: the teacher's normalised image features per image path (``batch["impath"]``), not the
logits themselves. The logits are then ``Teacher.logits_from_features(features)``: the very computation
``Teacher.logits`` does after its image forward, so the result is the same, and runs whose class lists
differ can share the features.

Exactness needs a deterministic training transform: a random op in ``INPUT.TRANSFORMS`` is refused with
a ``UserError`` naming it. Images are assumed not to change on disk while the process lives.

The store is module-level, keyed by everything that determines the teacher's image features (the
teacher's checkpoint and CLIP weights files, as the teacher records them, by path, size and mtime;
dataset name and root; the INPUT keys of the transform; precision; device). At most ``MAX_STORES`` keys are kept (least recently used dropped).
"""
from __future__ import annotations

import os
from collections import OrderedDict
from typing import Dict, Sequence, Tuple

import torch

from dassl.data.image_cache import INPUT_KEYS, file_identity

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

    def logits(self, image: torch.Tensor, keys: Sequence[str]) -> torch.Tensor:
        """Teacher logits of ``image`` [B, ...] whose rows are the images named by ``keys``."""
        missing = [i for i, key in enumerate(keys) if key not in self.store]
        if missing:
            if len(missing) < len(keys):
                image = image.index_select(0, torch.tensor(missing, device=image.device))
            features = self.teacher.image_features(image)
            for row, i in enumerate(missing):
                self.store[keys[i]] = features[row]
            self.computed += len(missing)
        features = torch.stack([self.store[key] for key in keys])
        return self.teacher.logits_from_features(features)
