"""Opt-in, process-level cache of transformed images (``DATALOADER.CACHE_IMAGES``).

Why: with a deterministic transform an image becomes the same tensor at every access, yet each epoch,
each evaluation and each run in a long-lived process (e.g. benchmarks/synthshapes' in-process train.py
workers) opens, decodes, resizes and normalises it again. For small images that is a large part of a
run. With the key on, `DatasetWrapper` transforms each image once and later accesses, also those of
other `DataManager` instances in the same process, take the stored tensor (a copy of it).

Exactness: a transform is cached only when every op in it is known to be deterministic (the one
list of those is `dassl.data.transforms.DETERMINISTIC_OPS`); a random op is refused with a ``UserError``
(see :func:`check_cacheable`), as are the multi-view variants (``DATALOADER.K_TRANSFORMS`` > 1,
``DATALOADER.RETURN_IMG0``, a list of transforms), which this cache does not cover. The key of an image
is (transform description, absolute path, file size, mtime): a file rewritten on disk is read again.

Bound: the store holds at most `MAX_BYTES` of tensors (1 GiB by default); beyond that the least recently
used images are dropped, and a one-line notice says so (once per process until :func:`clear`).
With ``DATALOADER.NUM_WORKERS`` > 0 each loader worker fills its own copy, which ends with the epoch.
"""
from __future__ import annotations

import os
from collections import OrderedDict
from typing import Callable, Hashable, Optional, Tuple

import torch

from dassl.utils.tools import UserError

from .transforms.determinism import require_deterministic_transforms

CONFIG_KEY = "DATALOADER.CACHE_IMAGES"
MAX_BYTES = 1 << 30  # default byte budget of the process-level store
# INPUT keys that shape a transform's output (added to its repr in the key, belt and braces).
INPUT_KEYS = ("SIZE", "INTERPOLATION", "PIXEL_MEAN", "PIXEL_STD", "TRANSFORMS", "NO_TRANSFORM")


class ImageStore:
    """Transformed images by key, least recently used first, holding at most ``max_bytes`` of tensors."""

    def __init__(self, max_bytes: int = MAX_BYTES) -> None:
        self.max_bytes = max_bytes
        self.nbytes = 0
        self.full_noticed = False
        self._items: "OrderedDict[Hashable, torch.Tensor]" = OrderedDict()

    def __len__(self) -> int:
        return len(self._items)

    def get(self, key: Hashable) -> Optional[torch.Tensor]:
        """The stored tensor of ``key`` (marked as just used), or None."""
        tensor = self._items.get(key)
        if tensor is not None:
            self._items.move_to_end(key)
        return tensor

    def put(self, key: Hashable, tensor: torch.Tensor) -> None:
        """Store ``tensor``, dropping the least recently used entries to stay within the budget."""
        size = tensor.element_size() * tensor.nelement()
        if size > self.max_bytes:
            return
        self._drop(key)
        while self._items and self.nbytes + size > self.max_bytes:
            self._notice_full()
            self._drop(next(iter(self._items)))
        self._items[key] = tensor
        self.nbytes += size

    def clear(self) -> None:
        """Forget every image (and the budget notice)."""
        self._items.clear()
        self.nbytes = 0
        self.full_noticed = False

    def _drop(self, key: Hashable) -> None:
        tensor = self._items.pop(key, None)
        if tensor is not None:
            self.nbytes -= tensor.element_size() * tensor.nelement()

    def _notice_full(self) -> None:
        if not self.full_noticed:
            self.full_noticed = True
            print(f"Image cache ({CONFIG_KEY}): budget of {format_bytes(self.max_bytes)} reached with "
                  f"{len(self._items):,} images; dropping the least recently used ones from now on")


_store = ImageStore()


def store() -> ImageStore:
    """The process-level store shared by every `DatasetWrapper` of this process."""
    return _store


def clear() -> None:
    """Forget every cached image (tests; freeing memory)."""
    _store.clear()


def format_bytes(n: int) -> str:
    """``n`` bytes as a short human-readable size (MiB below 1 GiB, else GiB)."""
    if n >= 1 << 30:
        return f"{n / (1 << 30):.1f} GiB"
    return f"{n / (1 << 20):.1f} MiB"


def describe(cfg, transform) -> str:
    """A text that changes whenever the transform's output may change: its repr and the INPUT keys."""
    inputs = ", ".join(f"{k}={cfg.INPUT[k]!r}" for k in INPUT_KEYS)
    return f"{transform!r} | {inputs}"


def check_cacheable(cfg, transform, is_train: bool) -> None:
    """Refuse ``DATALOADER.CACHE_IMAGES`` for a loader whose output would not be one fixed tensor per image."""
    loader = "training" if is_train else "test"
    fix = f"or set {CONFIG_KEY} False"
    if is_train and cfg.DATALOADER.K_TRANSFORMS > 1:
        raise UserError(f"{CONFIG_KEY} True caches one view per image, but DATALOADER.K_TRANSFORMS is "
                        f"{cfg.DATALOADER.K_TRANSFORMS}: set DATALOADER.K_TRANSFORMS 1 {fix}.")
    if cfg.DATALOADER.RETURN_IMG0:
        raise UserError(f"{CONFIG_KEY} True caches one view per image and does not cover "
                        f"DATALOADER.RETURN_IMG0 True: set DATALOADER.RETURN_IMG0 False {fix}.")
    if isinstance(transform, (list, tuple)):
        raise UserError(f"{CONFIG_KEY} True caches one view per image, but the {loader} loader has a list of "
                        f"{len(transform)} transforms: use a single transform {fix}.")
    require_deterministic_transforms(cfg, CONFIG_KEY, transform=transform, loader=loader)


def file_identity(path: str) -> Optional[Tuple[str, int, int]]:
    """(absolute path, size, mtime in ns) of ``path``, or None when it cannot be read (no caching then)."""
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return (os.path.abspath(path), stat.st_size, stat.st_mtime_ns)


def cached_image(path: str, description: str, load: Callable[[str], torch.Tensor]) -> torch.Tensor:
    """``load(path)`` (the transformed image), taken from the store when the same file was loaded before.

    A copy is returned so that a caller changing it in place cannot change the stored tensor.
    """
    identity = file_identity(path)
    if identity is None:
        return load(path)  # missing file: let the loader raise its clear error
    key = (description, *identity)
    tensor = _store.get(key)
    if tensor is None:
        tensor = load(path)
        if not isinstance(tensor, torch.Tensor):
            return tensor
        _store.put(key, tensor)
    return tensor.clone()


def summary(num_workers: int) -> str:
    """One line on the store's state for the run's log, with a note when loader workers keep their own copy."""
    line = (f"Image cache ({CONFIG_KEY}): {len(_store):,} images ({format_bytes(_store.nbytes)}) held in this "
            f"process, budget {format_bytes(_store.max_bytes)}")
    if num_workers > 0:
        line += (f"; with DATALOADER.NUM_WORKERS {num_workers} each worker fills its own copy for one epoch "
                 "(NUM_WORKERS 0 keeps them)")
    return line
