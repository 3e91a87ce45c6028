"""Which process of a multi-process (torchrun) run this is, and the few collectives every layer needs.

A run started with ``torchrun --nproc_per_node N`` has N processes (ranks 0..N-1); rank 0 is the
*main* process: the only one that logs, holds the run lock and writes files. These helpers are the
engine's one place to ask "which process am I" and to exchange small Python objects between the
processes. Each is a no-op (or returns the trivial answer) in a single-process run, so code written
for N processes runs unchanged in one.

The rank is read from ``torch.distributed`` once a process group exists, and before that from the
variables torchrun sets (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``), so that a process knows it is not
the main one even before it joins the group. Joining the group (backend, device) is the engine's job:
`dassl.engine.distributed`. This module does not import torch unless a group is active, so the cheap
utilities (logging, JSON writing) stay cheap to import.
"""
from __future__ import annotations

import os
import sys
from typing import Any, List

__all__ = ["process_rank", "local_rank", "world_size", "is_main_process", "group_active", "barrier",
           "all_gather_objects", "broadcast_object"]


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name, "")
    try:
        return int(value)
    except ValueError:
        return default


def group_active() -> bool:
    """Whether this process belongs to an initialised process group of more than one process."""
    dist = sys.modules.get("torch.distributed")
    if dist is None or not dist.is_available() or not dist.is_initialized():
        return False
    return dist.get_world_size() > 1


def process_rank() -> int:
    """This process's global rank (0 in a single-process run)."""
    if group_active():
        return sys.modules["torch.distributed"].get_rank()
    return _env_int("RANK", 0)


def local_rank() -> int:
    """This process's rank on its machine (torchrun's ``LOCAL_RANK``; picks the GPU)."""
    return _env_int("LOCAL_RANK", 0)


def world_size() -> int:
    """The number of processes of the run (1 without torchrun)."""
    if group_active():
        return sys.modules["torch.distributed"].get_world_size()
    return max(1, _env_int("WORLD_SIZE", 1))


def is_main_process() -> bool:
    """True for rank 0 (and for a single-process run): the process that logs and writes files."""
    return process_rank() == 0


def barrier() -> None:
    """Wait until every process gets here (no-op without a process group)."""
    if group_active():
        sys.modules["torch.distributed"].barrier()


def all_gather_objects(obj: Any) -> List[Any]:
    """Every process's `obj` (picklable), in rank order; ``[obj]`` without a process group."""
    if not group_active():
        return [obj]
    dist = sys.modules["torch.distributed"]
    gathered: List[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, obj)
    return gathered


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """Rank `src`'s `obj` on every process (the argument of the other ranks is ignored)."""
    if not group_active():
        return obj
    dist = sys.modules["torch.distributed"]
    holder = [obj]
    dist.broadcast_object_list(holder, src=src)
    return holder[0]
