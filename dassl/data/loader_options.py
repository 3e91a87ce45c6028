"""The DataLoader options that keep an accelerator fed: pinned memory, persistent workers, prefetch depth.

Config keys (``DATALOADER.*``), each with an automatic default:

- ``PIN_MEMORY`` (None = on when the run uses CUDA): page-locked batches copy to the GPU asynchronously.
- ``PERSISTENT_WORKERS`` (None = on when ``NUM_WORKERS`` > 0 and the training data are seeded): worker
  processes live for the whole run instead of being started again for every pass over a loader, which
  saves their start-up (and the refill of ``CACHE_IMAGES``' per-worker copies) at every epoch and every
  evaluation. Not automatic for unseeded data: a DataLoader draws its workers' random seeds from the
  global generator each time it starts them, so keeping them would change the random stream of later
  epochs (Dassl's and PromptKD's default). With seeded data (``SEEDED_AUGMENTATION``) every view is a
  function of (seed, epoch, index) and the workers' lifetime cannot change what is loaded.
- ``PREFETCH_FACTOR`` (0 = PyTorch's default, 2): batches each worker loads ahead.

None of them changes which samples or views a run sees; only ``PERSISTENT_WORKERS`` True on unseeded
data changes the random stream (see above), and only when chosen explicitly.
"""
from __future__ import annotations

from typing import Any, Dict

import torch

from dassl.utils.tools import UserError


def _flag(cfg, key: str, automatic: bool) -> bool:
    value = getattr(cfg.DATALOADER, key)
    if value is None:
        return automatic
    if not isinstance(value, bool):
        raise UserError(f"DATALOADER.{key} must be True, False or None (automatic), got {value!r}")
    return value


def loader_options(cfg, seeded: bool) -> Dict[str, Any]:
    """Keyword arguments for ``torch.utils.data.DataLoader`` from ``cfg.DATALOADER``.

    `seeded`: whether the run's training data are seeded (``dassl.data.seeding``), which makes
    persistent workers the automatic choice.
    """
    workers = cfg.DATALOADER.NUM_WORKERS
    if not isinstance(workers, int) or workers < 0:
        raise UserError(f"DATALOADER.NUM_WORKERS must be an integer >= 0, got {workers!r}")
    uses_cuda = bool(cfg.USE_CUDA) and torch.cuda.is_available()
    options: Dict[str, Any] = {"num_workers": workers, "pin_memory": _flag(cfg, "PIN_MEMORY", uses_cuda)}
    persistent = _flag(cfg, "PERSISTENT_WORKERS", workers > 0 and seeded)
    prefetch = cfg.DATALOADER.PREFETCH_FACTOR
    if not isinstance(prefetch, int) or prefetch < 0:
        raise UserError(f"DATALOADER.PREFETCH_FACTOR must be an integer >= 0 (0: PyTorch's default), got {prefetch!r}")
    if workers > 0:  # both options exist only for worker processes (PyTorch refuses them otherwise)
        options["persistent_workers"] = persistent
        if prefetch:
            options["prefetch_factor"] = prefetch
    return options


def describe(options: Dict[str, Any]) -> str:
    """One log line: the loader options in use."""
    if not options["num_workers"]:
        return f"Data loading: in the main process, pinned memory {'on' if options['pin_memory'] else 'off'}"
    return (f"Data loading: {options['num_workers']} workers, persistent {'on' if options['persistent_workers'] else 'off'}, "
            f"prefetch {options.get('prefetch_factor', 2)} batches each, pinned memory "
            f"{'on' if options['pin_memory'] else 'off'}")
