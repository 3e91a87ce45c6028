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
import tempfile
import warnings
from typing import Any, Callable, Iterable, List, Optional, Sequence

__all__ = [
    "UserError",
    "UnknownChoiceError",
    "mkdir_if_missing",
    "check_isfile",
    "read_json",
    "atomic_write",
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


def atomic_write(fpath: str, write: Callable[[str], None]) -> None:
    """Call ``write(tmp_path)`` on a temporary file next to `fpath`, then rename it over `fpath`.

    The temporary file lives in the same folder (created if missing) so that ``os.replace`` is
    atomic: readers see either the old file or the complete new one, never a truncated file.
    The data is fsync'ed before the rename; on any error the temporary file is removed.
    """
    folder = osp.dirname(osp.abspath(fpath))
    mkdir_if_missing(folder)
    fd, tmp_path = tempfile.mkstemp(dir=folder, prefix="." + osp.basename(fpath) + ".", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp_path)
        with open(tmp_path, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp_path, fpath)
    except BaseException:
        if osp.exists(tmp_path):
            os.remove(tmp_path)
        raise


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
