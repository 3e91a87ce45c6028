"""Checkpoint files (save / load / resume), pretrained-weight loading and parameter counting.

File layout and dict keys follow Dassl: ``<dir>/model.pth.tar-<E>``,
``<dir>/model-best.pth.tar`` and the text file ``<dir>/checkpoint`` naming the last file written;
keys ``state_dict, epoch, optimizer, scheduler, val_result``.

What we do better than upstream:
- every file is written to a temporary file in the same folder and then renamed over the target
  (`os.replace` is atomic), so a kill never leaves a truncated checkpoint behind; files get the usual
  permissions (umask), and a read-only folder or a full disk is one clear error naming the file;
- a checkpoint of another shape is one clear error naming the tensors (`load_state_dict_checked`);
- our own checkpoints hold only tensors and plain Python data and load with
  ``torch.load(weights_only=True)``;
- checkpoints written by the ORIGINAL Dassl / CoOp / PromptSRC / PromptKD code (whose
  ``scheduler`` entry holds a pickled torch scheduler object that holds the optimizer object and a
  ``collections.defaultdict``) are still read through torch's weights-only unpickler: the offending
  globals are mapped to harmless stand-ins that come out as plain dicts, so no pickled code runs.
"""
from __future__ import annotations

import os.path as osp
import pickle
import warnings
import zipfile
from collections import OrderedDict
from typing import Any, Dict, Iterable, List, Optional

import torch
import torch.nn as nn

from dassl.utils.tools import UserError, atomic_write, mkdir_if_missing

__all__ = [
    "CheckpointNotFoundError",
    "CheckpointMismatchError",
    "load_state_dict_checked",
    "save_checkpoint",
    "load_checkpoint",
    "resume_from_checkpoint",
    "load_pretrained_weights",
    "count_num_param",
    "atomic_torch_save",
    "atomic_copy",
    "atomic_write_text",
    "get_rng_state",
    "set_rng_state",
]

# Globals that pickled Dassl-era objects reference and that we replace by plain-data stand-ins.
STUBBED_MODULE_PREFIXES = ("torch.optim.", "dassl.")
STUBBED_GLOBALS = ("collections.defaultdict",)
# Harmless builtins such objects reference (e.g. the ``dict`` factory of ``defaultdict(dict)``).
HARMLESS_BUILTINS = {"builtins.dict": dict, "builtins.list": list, "builtins.int": int,
                     "builtins.float": float, "builtins.str": str}


class CheckpointNotFoundError(UserError, FileNotFoundError):
    """A checkpoint file (or the folder that should hold one) does not exist."""


class CheckpointMismatchError(UserError):
    """A checkpoint's tensors do not fit the model (other shapes, or other keys in a strict load)."""


DEFAULT_MISMATCH_HINT = ("it was saved by a model built with other settings: load it with the configuration it "
                         "was trained with, or use another --model-dir / output folder")


# --------------------------------------------------------------------------- writing
def atomic_torch_save(obj: Any, fpath: str) -> None:
    """`torch.save` that never leaves a partial file at `fpath` (temporary file + rename)."""
    atomic_write(fpath, lambda tmp: torch.save(obj, tmp))


def atomic_copy(source: str, target: str) -> None:
    """Copy a file so that `target` is either the old file or the complete copy."""
    import shutil

    atomic_write(target, lambda tmp: shutil.copyfile(source, tmp))


def atomic_write_text(text: str, fpath: str) -> None:
    """Write a small text file atomically."""

    def write(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)

    atomic_write(fpath, write)


def _strip_module_prefix(state_dict: Dict[str, Any]) -> "OrderedDict[str, Any]":
    """Remove a leading ``module.`` (DataParallel / DDP wrappers) from every key."""
    stripped = OrderedDict()
    for key, value in state_dict.items():
        stripped[key[len("module."):] if key.startswith("module.") else key] = value
    return stripped


def save_checkpoint(state: Dict[str, Any], save_dir: str, is_best: bool = False,
                    remove_module_from_keys: bool = True, model_name: str = "",
                    update_pointer: bool = True, verbose: bool = True) -> str:
    """Write `state` to ``save_dir/<model_name or model.pth.tar-<epoch>>`` atomically.

    Updates the text file ``save_dir/checkpoint`` with the file's basename (unless
    `update_pointer` is False, used for the extra resume file); with `is_best` also writes
    ``model-best.pth.tar``. Returns the path written.
    """
    mkdir_if_missing(save_dir)
    if remove_module_from_keys and "state_dict" in state:
        state = dict(state)
        state["state_dict"] = _strip_module_prefix(state["state_dict"])

    fname = model_name or f"model.pth.tar-{state['epoch']}"
    fpath = osp.join(save_dir, fname)
    atomic_torch_save(state, fpath)
    if verbose:
        print(f"Checkpoint saved to {fpath}")
    if update_pointer:
        atomic_write_text(f"{osp.basename(fpath)}\n", osp.join(save_dir, "checkpoint"))

    if is_best:
        best_fpath = osp.join(save_dir, "model-best.pth.tar")
        atomic_torch_save(state, best_fpath)
        print(f'Best checkpoint saved to "{best_fpath}"')
    return fpath


# --------------------------------------------------------------------------- random states
def get_rng_state() -> Dict[str, Any]:
    """Torch (CPU and CUDA), Python and NumPy random states as tensors and plain data.

    Stored in resume checkpoints; loads with ``torch.load(weights_only=True)``.
    """
    import random

    import numpy as np

    py_version, py_internal, py_gauss = random.getstate()
    np_name, np_key, np_pos, np_has_gauss, np_gauss = np.random.get_state(legacy=True)
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "python": {"version": py_version, "internal": torch.tensor(py_internal, dtype=torch.int64),
                   "gauss_next": py_gauss},
        "numpy": {"name": np_name, "key": torch.from_numpy(np_key.astype(np.int64)), "pos": int(np_pos),
                  "has_gauss": int(np_has_gauss), "cached_gaussian": float(np_gauss)},
    }


def set_rng_state(state: Dict[str, Any]) -> None:
    """Restore the random states captured by `get_rng_state`."""
    import random

    import numpy as np

    torch.set_rng_state(state["torch"])
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    py = state["python"]
    random.setstate((py["version"], tuple(int(v) for v in py["internal"].tolist()), py["gauss_next"]))
    npy = state["numpy"]
    np.random.set_state((npy["name"], npy["key"].numpy().astype(np.uint32), npy["pos"],
                         npy["has_gauss"], npy["cached_gaussian"]))


# --------------------------------------------------------------------------- reading
def _pickled_object_stand_in(class_path: str) -> type:
    """A dict subclass registered under `class_path`; unpickling fills it with the object's state."""

    class PickledObjectState(dict):
        pickled_class = class_path

        def __setstate__(self, state: Any) -> None:
            if isinstance(state, tuple) and len(state) == 2:  # (dict state, slot state)
                state = {**(state[0] or {}), **(state[1] or {})}
            if isinstance(state, dict):
                self.update(state)
            else:
                self["state"] = state

    PickledObjectState.__qualname__ = PickledObjectState.__name__ = "PickledObjectState"
    return PickledObjectState


def _plain_dict_from_defaultdict(default_factory: Any = None, *args: Any) -> dict:
    """Stand-in for ``collections.defaultdict(factory)``: the items arrive later as SETITEMS."""
    return {}


def _unsafe_pickle_globals(fpath: str) -> List[str]:
    """The ``module.name`` globals of a checkpoint that the weights-only unpickler rejects."""
    try:
        return list(torch.serialization.get_unsafe_globals_in_checkpoint(fpath))
    except (RuntimeError, ValueError, zipfile.BadZipFile, pickle.UnpicklingError):
        return []


def _stand_ins_for(global_names: Iterable[str]) -> list:
    stand_ins = []
    for name in sorted(global_names):
        if name in HARMLESS_BUILTINS:
            stand_ins.append((HARMLESS_BUILTINS[name], name))
        elif name in STUBBED_GLOBALS:
            stand_ins.append((_plain_dict_from_defaultdict, name))
        elif name.startswith(STUBBED_MODULE_PREFIXES):
            stand_ins.append((_pickled_object_stand_in(name), name))
    return stand_ins


def _to_plain(obj: Any) -> Any:
    """Turn stand-in objects (dict subclasses) back into plain dicts, recursively."""
    if isinstance(obj, dict) and type(obj) not in (dict, OrderedDict):
        return {key: _to_plain(value) for key, value in obj.items()}
    if isinstance(obj, OrderedDict):
        for key, value in obj.items():
            obj[key] = _to_plain(value)
        return obj
    if type(obj) is dict:
        return {key: _to_plain(value) for key, value in obj.items()}
    if isinstance(obj, list):
        return [_to_plain(value) for value in obj]
    if isinstance(obj, tuple):
        return tuple(_to_plain(value) for value in obj)
    return obj


def _load_with_stand_ins(fpath: str, map_location: Any) -> Any:
    stand_ins = _stand_ins_for(_unsafe_pickle_globals(fpath))
    if not stand_ins:
        raise pickle.UnpicklingError("no known legacy globals to map")
    with torch.serialization.safe_globals(stand_ins):
        return _to_plain(torch.load(fpath, map_location=map_location, weights_only=True))


def _short_reason(error: Exception) -> str:
    """The one informative line of torch's long weights-only error message."""
    for line in str(error).splitlines():
        if "WeightsUnpickler error:" in line:
            return line.split("WeightsUnpickler error:", 1)[1].strip().split(" Please use")[0]
    return str(error).splitlines()[0] if str(error) else type(error).__name__


def load_checkpoint(fpath: Optional[str]) -> Any:
    """Load a checkpoint onto the CPU without executing pickled code.

    Our own files load with ``torch.load(weights_only=True)``. Files from the original Dassl-based
    code (pickled scheduler / optimizer objects, ``collections.defaultdict``) are read by the same
    weights-only unpickler with those globals mapped to stand-ins that become plain dicts, so
    ``state_dict`` and the other plain entries come out intact. A missing file raises
    `CheckpointNotFoundError` naming the path.
    """
    if fpath is None:
        raise ValueError("File path is None")
    fpath = str(fpath)
    if not osp.isfile(fpath):
        raise CheckpointNotFoundError(f'File is not found at "{fpath}"')
    try:
        return torch.load(fpath, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as first_error:
        try:
            return _load_with_stand_ins(fpath, map_location="cpu")
        except pickle.UnpicklingError as second_error:
            raise UserError(
                f'Unable to load checkpoint from "{fpath}": it contains pickled objects that are '
                f"not plain data ({_short_reason(first_error)}; after mapping the known legacy "
                f"objects to plain data: {_short_reason(second_error)})"
            ) from None
    except (RuntimeError, EOFError) as exc:
        raise UserError(f'Unable to load checkpoint from "{fpath}" (damaged or not a torch file): {exc}') from exc


def read_checkpoint_pointer(fdir: str) -> str:
    """Return the path named by the first line of ``fdir/checkpoint``."""
    pointer = osp.join(fdir, "checkpoint")
    if not osp.isfile(pointer):
        raise CheckpointNotFoundError(f'No "checkpoint" file in "{fdir}"')
    with open(pointer, "r", encoding="utf-8") as f:
        fname = f.readline().strip("\n")
    return osp.join(fdir, fname)


def _listed(keys: List[str], limit: int = 3) -> str:
    shown = ", ".join(keys[:limit])
    return shown + (f" and {len(keys) - limit} more" if len(keys) > limit else "")


def load_state_dict_checked(model: nn.Module, state_dict: Dict[str, Any], source: str, strict: bool = True,
                            hint: str = ""):
    """``model.load_state_dict`` that reports a checkpoint of another shape as one clear line.

    Tensors whose shapes differ (e.g. another prompt length or projection width) and, for a strict
    load, missing or unexpected keys raise `CheckpointMismatchError` naming `source`, the first keys
    with both shapes, and `hint` (what to do; a generic advice by default). Returns torch's result.
    """
    model_state = model.state_dict()
    mismatched = [key for key, value in state_dict.items()
                  if key in model_state and torch.is_tensor(value) and value.shape != model_state[key].shape]
    problems = []
    if mismatched:
        described = [f"{key} has shape {tuple(state_dict[key].shape)} in the checkpoint and "
                     f"{tuple(model_state[key].shape)} in the model" for key in mismatched[:3]]
        more = f" (and {len(mismatched) - 3} more tensors)" if len(mismatched) > 3 else ""
        problems.append("; ".join(described) + more)
    if strict:
        missing = [key for key in model_state if key not in state_dict]
        unexpected = [key for key in state_dict if key not in model_state]
        if missing:
            problems.append(f"keys missing from the checkpoint: {_listed(missing)}")
        if unexpected:
            problems.append(f"keys the model does not have: {_listed(unexpected)}")
    if problems:
        raise CheckpointMismatchError(f'"{source}" does not fit the model: {"; ".join(problems)}; '
                                      f"{hint or DEFAULT_MISMATCH_HINT}")
    return model.load_state_dict(state_dict, strict=strict)


def restore_from_state(checkpoint: Dict[str, Any], model: nn.Module, optimizer=None, scheduler=None,
                       source: str = "the checkpoint", hint: str = "") -> int:
    """Load model / optimizer / scheduler state from a loaded checkpoint dict; return its epoch.

    A checkpoint of another shape raises `CheckpointMismatchError` naming `source` (see
    `load_state_dict_checked`).
    """
    load_state_dict_checked(model, checkpoint["state_dict"], source, strict=True, hint=hint)
    print("Loaded model weights")
    if optimizer is not None and checkpoint.get("optimizer"):
        try:
            optimizer.load_state_dict(checkpoint["optimizer"])
        except ValueError as exc:  # another number / size of parameter groups
            raise CheckpointMismatchError(f'The optimizer state in "{source}" does not fit this model\'s '
                                          f"optimizer ({exc}); {hint or DEFAULT_MISMATCH_HINT}") from None
        print("Loaded optimizer")
    if scheduler is not None and checkpoint.get("scheduler"):
        scheduler.load_state_dict(checkpoint["scheduler"])
        print("Loaded scheduler")
    start_epoch = checkpoint["epoch"]
    print(f"Previous epoch: {start_epoch}")
    return start_epoch


def resume_from_checkpoint(fdir: str, model: nn.Module, optimizer=None, scheduler=None,
                           fname: Optional[str] = None) -> int:
    """Restore model, optimizer and scheduler from ``fdir`` and return the completed-epoch count.

    The file is `fname` when given, else the one named in ``fdir/checkpoint`` (Dassl behaviour).
    """
    fpath = osp.join(fdir, fname) if fname else read_checkpoint_pointer(fdir)
    print(f'Loading checkpoint from "{fpath}"')
    return restore_from_state(load_checkpoint(fpath), model, optimizer, scheduler, source=fpath)


def load_pretrained_weights(model: nn.Module, weight_path: str) -> None:
    """Copy the tensors of `weight_path` whose names and shapes match `model` (others are reported)."""
    checkpoint = load_checkpoint(weight_path)
    state_dict = checkpoint["state_dict"] if isinstance(checkpoint, dict) and "state_dict" in checkpoint \
        else checkpoint
    model_dict = model.state_dict()
    matched, discarded = OrderedDict(), []
    for key, value in _strip_module_prefix(state_dict).items():
        if key in model_dict and torch.is_tensor(value) and model_dict[key].size() == value.size():
            matched[key] = value
        else:
            discarded.append(key)
    model_dict.update(matched)
    model.load_state_dict(model_dict)
    if not matched:
        warnings.warn(f'Cannot load {weight_path} (check the key names manually)')
        return
    print(f"Successfully loaded pretrained weights from {weight_path}")
    if discarded:
        print(f"Layers discarded due to unmatched keys or size: {discarded}")


def count_num_param(model: Optional[nn.Module] = None, params: Optional[Iterable] = None) -> int:
    """Number of elements in `model`'s parameters, or in an iterable of tensors / param-group dicts."""
    if model is not None:
        return sum(p.numel() for p in model.parameters())
    if params is not None:
        total = 0
        for item in params:
            if isinstance(item, dict):
                group = item["params"]
                total += sum(p.numel() for p in group) if isinstance(group, (list, tuple)) else group.numel()
            else:
                total += item.numel()
        return total
    raise ValueError("count_num_param() needs model or params")
