"""Small general-purpose helpers (files, JSON, images, seeding, environment info).

Heavy modules (torch, numpy, PIL) are imported inside the functions that need them so that
`dassl.config` and this module stay cheap to import.
"""
from __future__ import annotations

import difflib
import errno
import json
import os
import os.path as osp
import random
import re
import secrets
import shutil
import warnings
from typing import Any, Callable, Iterable, List, Optional, Sequence

from dassl.utils.distributed import is_main_process

__all__ = [
    "UserError",
    "UnknownChoiceError",
    "mkdir_if_missing",
    "check_isfile",
    "read_json",
    "OutputWriteError",
    "atomic_write",
    "create_temporary_file",
    "describe_write_failure",
    "remove_stale_temporary_files",
    "write_json",
    "read_image",
    "listdir_nohidden",
    "set_random_seed",
    "collect_env_info",
    "tolist_if_not",
    "check_availability",
    "get_most_similar_str_to_a_from_b",
]


class UserError(Exception):
    """An error caused by the user's input (a missing file, a bad config value, a wrong name).

    Any package raises it with a message that names the file, key or flag at fault;
    ``train.py`` prints ``Error: <message>`` and exits with status 2 instead of a traceback.
    """


class UnknownChoiceError(UserError, ValueError):
    """A requested name (trainer, dataset, evaluator, ...) is not among the available ones."""


def mkdir_if_missing(dirname: str) -> None:
    """Create ``dirname`` (and parents) unless it exists; a concurrent creation is not an error."""
    if osp.exists(dirname):
        return
    try:
        os.makedirs(dirname)
    except OSError as exc:
        if exc.errno != errno.EEXIST:
            raise


def check_isfile(fpath: str) -> bool:
    """Return whether ``fpath`` is an existing file, warning when it is not."""
    isfile = osp.isfile(fpath)
    if not isfile:
        warnings.warn(f'No file found at "{fpath}"')
    return isfile


def read_json(fpath: str) -> Any:
    """Load a JSON file; a missing or malformed file raises a ``UserError`` naming it."""
    try:
        with open(fpath, "r", encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        raise UserError(f'JSON file not found: "{fpath}"') from None
    except json.JSONDecodeError as exc:
        raise UserError(f'Cannot parse JSON file "{fpath}": {exc}') from None


# Temporary files of `atomic_write`: ``.<target name>.<8 random characters>.tmp`` next to the target.
TEMPORARY_SUFFIX = ".tmp"
_TEMPORARY_NAME = re.compile(r"^\..+\.[0-9a-z_]{8}\.tmp$")
# errno values that mean "this output location cannot take the file" (not a bug in the program).
DISK_FULL_ERRNOS = frozenset(getattr(errno, name) for name in ("ENOSPC", "EDQUOT") if hasattr(errno, name))
NOT_WRITABLE_ERRNOS = frozenset((errno.EACCES, errno.EPERM, errno.EROFS))
# torch.save reports a failed write (e.g. a full disk) as a RuntimeError from its zip writer.
_TORCH_WRITER_FAILURE = ("PytorchStreamWriter", "inline_container", "file write failed")


class OutputWriteError(UserError, OSError):
    """A file could not be written: its folder is read-only, the disk is full, or the write failed."""


def _free_space(folder: str) -> Optional[int]:
    try:
        return shutil.disk_usage(folder).free
    except OSError:
        return None


def _human_bytes(count: int) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if count < 1024 or unit == "GiB":
            return f"{count:.0f} {unit}" if unit == "bytes" else f"{count:.1f} {unit}"
        count /= 1024
    return f"{count} bytes"


def describe_write_failure(fpath: str, reason: str, error_number: Optional[int] = None) -> str:
    """One line saying that `fpath` could not be written, why, and what to do about it.

    The advice follows the errno when there is one (full disk / quota, read-only or forbidden
    folder); otherwise the free space of the folder's disk is reported so that a full disk shows.
    """
    folder = osp.dirname(osp.abspath(fpath)) or "."
    existing = folder
    while existing and not osp.isdir(existing):
        existing = osp.dirname(existing)
    free = _free_space(existing or ".")
    free_text = f"{_human_bytes(free)} free" if free is not None else "free space unknown"
    if error_number in DISK_FULL_ERRNOS:
        advice = (f"the disk (or quota) holding {folder} is full ({free_text}): free some space or choose "
                  f"another output folder (--output-dir / OUTPUT_DIR)")
    elif error_number in NOT_WRITABLE_ERRNOS:
        advice = f"{folder} is not writable: choose a writable output folder (--output-dir / OUTPUT_DIR)"
    else:
        advice = f"check that {folder} is writable and that its disk has room ({free_text})"
    return f'Cannot write "{fpath}" ({reason}); {advice}'


def _is_output_failure(exc: BaseException) -> bool:
    if isinstance(exc, OutputWriteError):
        return False  # already described
    if isinstance(exc, OSError):
        return exc.errno in DISK_FULL_ERRNOS or exc.errno in NOT_WRITABLE_ERRNOS or exc.errno == errno.EIO
    return isinstance(exc, RuntimeError) and any(mark in str(exc) for mark in _TORCH_WRITER_FAILURE)


def create_temporary_file(folder: str, target_name: str) -> str:
    """Create an empty ``.<target_name>.<random>.tmp`` in `folder` with the usual permissions.

    Opened with mode 0o666 so the process umask applies, as for any file the user creates
    (``tempfile.mkstemp`` would make it 0o600, unreadable to teammates once renamed into place).
    """
    for _ in range(100):
        path = osp.join(folder, f".{target_name}.{secrets.token_hex(4)}{TEMPORARY_SUFFIX}")
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666)
        except FileExistsError:
            continue
        except OSError as exc:  # name the folder the user chose, not our temporary name
            raise OSError(exc.errno, exc.strerror, folder) from exc
        os.close(fd)
        return path
    raise FileExistsError(f"No free temporary file name for {target_name!r} in {folder}")


def atomic_write(fpath: str, write: Callable[[str], None]) -> None:
    """Call ``write(tmp_path)`` on a temporary file next to `fpath`, then rename it over `fpath`.

    The temporary file lives in the same folder (created if missing) so that ``os.replace`` is
    atomic: readers see either the old file or the complete new one, never a truncated file.
    The data is fsync'ed before the rename; on any error the temporary file is removed (a killed
    process leaves it behind: `remove_stale_temporary_files` clears such files on the next start).
    A read-only folder, a full disk or a failed write raises `OutputWriteError` naming the file.

    In a multi-process run (torchrun) only rank 0 writes: on the other processes, which hold the same
    state, this is a no-op, so a checkpoint or results.json is written once whoever asks for it.
    """
    if not is_main_process():
        return
    folder = osp.dirname(osp.abspath(fpath))
    tmp_path = None
    try:
        mkdir_if_missing(folder)
        tmp_path = create_temporary_file(folder, osp.basename(fpath))
        write(tmp_path)
        with open(tmp_path, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp_path, fpath)
    except BaseException as exc:
        if tmp_path is not None and osp.exists(tmp_path):
            try:
                os.remove(tmp_path)
            except OSError:
                pass
        if _is_output_failure(exc):
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc).splitlines()[0]
            raise OutputWriteError(describe_write_failure(fpath, reason, getattr(exc, "errno", None))) from exc
        raise


def remove_stale_temporary_files(folder: str) -> List[str]:
    """Delete the temporary files that interrupted `atomic_write` calls left in `folder`.

    Only names of the form ``.<name>.<8 characters>.tmp`` are touched. Call it only while no other
    process writes into `folder` (train.py holds the folder's run lock). Returns the removed names.
    """
    if not osp.isdir(folder):
        return []
    removed = []
    for name in sorted(os.listdir(folder)):
        path = osp.join(folder, name)
        if _TEMPORARY_NAME.match(name) and osp.isfile(path):
            try:
                os.remove(path)
            except FileNotFoundError:
                continue
            removed.append(name)
    return removed


def write_json(obj: Any, fpath: str) -> None:
    """Write ``obj`` as JSON (indent 4, Dassl's separators) atomically, creating the parent folder."""

    def write(tmp_path: str) -> None:
        with open(tmp_path, "w", encoding="utf-8") as f:
            json.dump(obj, f, indent=4, separators=(",", ": "))

    atomic_write(fpath, write)


def read_image(path: str):
    """Open an image as an RGB ``PIL.Image``; an unreadable file raises an error naming it."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            return img.convert("RGB")
    except FileNotFoundError:
        raise UserError(f'Image file not found: "{path}"') from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise UserError(f'Cannot decode image "{path}": {exc}') from exc


def listdir_nohidden(path: str, sort: bool = False) -> List[str]:
    """List the names in ``path`` that do not start with a dot, optionally sorted."""
    items = [name for name in os.listdir(path) if not name.startswith(".")]
    if sort:
        items.sort()
    return items


def set_random_seed(seed: int) -> None:
    """Seed Python's ``random``, NumPy and torch (CPU and every CUDA device)."""
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.cuda.manual_seed_all(seed)


def collect_env_info() -> str:
    """Return torch's environment report plus the Pillow version (printed at start-up)."""
    import PIL
    from torch.utils.collect_env import get_pretty_env_info

    return get_pretty_env_info() + f"\n        Pillow ({PIL.__version__})"


def tolist_if_not(x: Any) -> list:
    """Wrap a non-list value in a list."""
    return x if isinstance(x, list) else [x]


def get_most_similar_str_to_a_from_b(a: str, b: Iterable[str]) -> Optional[str]:
    """Return the string of ``b`` most similar to ``a`` (difflib ratio), or None if ``b`` is empty."""
    best, best_score = None, -1.0
    for candidate in b:
        score = difflib.SequenceMatcher(None, a, candidate).ratio()
        if score > best_score:
            best, best_score = candidate, score
    return best


def check_availability(requested: str, available: Sequence[str]) -> None:
    """Raise ``UnknownChoiceError`` (a ValueError) unless ``requested`` is in ``available``."""
    if requested in available:
        return
    suggestion = get_most_similar_str_to_a_from_b(requested, available)
    raise UnknownChoiceError(
        f"The requested one is expected to belong to {sorted(available)}, "
        f"but got [{requested}] (do you mean [{suggestion}]?)"
    )
