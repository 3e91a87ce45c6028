"""Seeded data: the training order and each sample's random augmentation as pure functions of numbers.

With ``DATALOADER.SEEDED_AUGMENTATION`` (on by default for multi-process runs) nothing random in the
training data depends on which process or loader worker handles a sample, or on what that process
drew before:

- the order of epoch e is a permutation drawn from a generator seeded with ``derive_seed(seed, ORDER, e)``
  (`dassl.data.samplers.SeededSampler`);
- the random crop / flip / ... of sample i in epoch e run with torch's CPU generator (and Python's and
  NumPy's global generators) seeded with ``sample_seed(seed, e, i)`` (`seeded_rng`), so any transform
  built from torchvision's random ops (or a custom one drawing from those generators) becomes a pure
  function of (seed, epoch, index).

Hence a run's batches are the same with 0, 2 or 8 loader workers and with 1 or N processes, and a
resumed run sees the data an uninterrupted run would. Without the key (one process) the data come
from the global random streams, as in Dassl and PromptKD: PromptKD's one-step parity with the
original code needs exactly that stream.
"""
from __future__ import annotations

import contextlib
import hashlib
import random
import secrets
from typing import Iterator, Optional

import numpy as np
import torch

from dassl.utils.distributed import broadcast_object, world_size
from dassl.utils.tools import UserError

__all__ = ["CONFIG_KEY", "derive_seed", "order_seed", "sample_seed", "seeded_rng", "seeded_augmentation_enabled",
           "resolve_augmentation_seed"]

CONFIG_KEY = "DATALOADER.SEEDED_AUGMENTATION"
_ORDER_STREAM = 0  # keeps the order's seeds apart from the samples' seeds
_SAMPLE_STREAM = 1
_SEED_BITS = 63


def derive_seed(*parts: int) -> int:
    """A 63-bit seed that is a fixed function of the integers `parts` (the same in every process, on
    every machine and Python version: a hash, not Python's salted ``hash``)."""
    text = ":".join(str(int(part)) for part in parts).encode("ascii")
    digest = hashlib.blake2b(text, digest_size=8).digest()
    return int.from_bytes(digest, "little") & ((1 << _SEED_BITS) - 1)


def order_seed(seed: int, epoch: int) -> int:
    """The seed of epoch `epoch`'s sample order."""
    return derive_seed(seed, _ORDER_STREAM, epoch)


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """The seed of the augmentation of sample `index` (its position in the data source) in epoch `epoch`."""
    return derive_seed(seed, _SAMPLE_STREAM, epoch, index)


@contextlib.contextmanager
def seeded_rng(seed: int) -> Iterator[None]:
    """Run the body with torch's CPU generator, Python's `random` and NumPy's global generator seeded
    from `seed`; all three are restored afterwards, so the caller's random streams are untouched.

    Only the CPU generator is forked and reseeded (CUDA generators are left alone: transforms run on
    the CPU, and a training process's CUDA stream must not be reset per sample).
    """
    python_state = random.getstate()
    numpy_state = np.random.get_state()
    with torch.random.fork_rng(devices=[]):
        torch.default_generator.manual_seed(seed)
        random.seed(seed)
        np.random.seed(seed % (1 << 32))
        try:
            yield
        finally:
            random.setstate(python_state)
            np.random.set_state(numpy_state)


def seeded_augmentation_enabled(cfg, processes: Optional[int] = None) -> bool:
    """Whether the training data are seeded (``DATALOADER.SEEDED_AUGMENTATION``; None: automatic).

    None means on with several processes, off with one. Explicitly False with several processes is
    refused: the processes must split one common order of each epoch.
    """
    value = cfg.DATALOADER.SEEDED_AUGMENTATION
    processes = world_size() if processes is None else processes
    if value is None:
        return processes > 1
    if not isinstance(value, bool):
        raise UserError(f"{CONFIG_KEY} must be True, False or None (automatic: on for several processes), "
                        f"got {value!r}")
    if not value and processes > 1:
        raise UserError(f"{CONFIG_KEY} False cannot be used with {processes} processes: they split one seeded "
                        f"order of every epoch; set {CONFIG_KEY} True or leave it unset")
    return value


def resolve_augmentation_seed(cfg) -> int:
    """The base seed of the seeded data: ``SEED``, or for an unseeded run a random one drawn by rank 0
    and shared with every process (checkpoints store it, so a resumed run keeps it)."""
    if cfg.SEED >= 0:
        return int(cfg.SEED)
    return int(broadcast_object(secrets.randbits(_SEED_BITS)))
