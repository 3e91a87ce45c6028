"""Path checks and the user-facing errors every reader raises for a broken dataset folder.

All messages name the path at fault and point to DATASETS.md, so a user can fix the folder
without reading the code.
"""
from __future__ import annotations

import os
from typing import Iterable, List, Sequence

from dassl.utils import UserError

DOC_HINT = "See DATASETS.md (section '{name}') for the expected folder layout and where to get the files."

# How many offending paths an error message shows.
MAX_SHOWN = 5


def doc_hint(dataset_name: str) -> str:
    return DOC_HINT.format(name=dataset_name)


def dataset_root(cfg) -> str:
    """``DATASET.ROOT`` as an absolute path (``~`` expanded); an empty value is a user error."""
    root = cfg.DATASET.ROOT
    if not root:
        raise UserError("DATASET.ROOT is empty: pass --root <folder holding your datasets>. "
                        "See DATASETS.md for the layout.")
    return os.path.abspath(os.path.expanduser(root))


def require_dir(path: str, what: str, dataset_name: str) -> str:
    """Return `path` if it is a directory, else raise a UserError naming it."""
    if not os.path.isdir(path):
        raise UserError(f"{dataset_name}: {what} not found: expected a folder at {path}. "
                        + doc_hint(dataset_name))
    return path


def require_file(path: str, what: str, dataset_name: str) -> str:
    """Return `path` if it is a file, else raise a UserError naming it."""
    if not os.path.isfile(path):
        raise UserError(f"{dataset_name}: {what} not found: expected a file at {path}. "
                        + doc_hint(dataset_name))
    return path


def check_files_exist(paths: Iterable[str], source: str, dataset_name: str) -> None:
    """Raise one UserError listing how many of `paths` (read from `source`) are missing."""
    missing: List[str] = [p for p in paths if not os.path.isfile(p)]
    if missing:
        shown = "\n  ".join(missing[:MAX_SHOWN])
        more = f"\n  ... and {len(missing) - MAX_SHOWN} more" if len(missing) > MAX_SHOWN else ""
        raise UserError(
            f"{dataset_name}: {source} references {len(missing)} image file(s) that do not exist, e.g.:\n"
            f"  {shown}{more}\n" + doc_hint(dataset_name)
        )


def read_lines(path: str, what: str, dataset_name: str) -> List[str]:
    """Non-empty, right-stripped lines of a required text file."""
    require_file(path, what, dataset_name)
    with open(path, "r", encoding="utf-8") as f:
        return [line.rstrip("\r\n") for line in f if line.strip()]


def relative_to(path: str, prefix: str) -> str:
    """`path` relative to `prefix` with forward slashes (the form stored in our JSON files)."""
    return os.path.relpath(path, prefix).replace(os.sep, "/")


def sorted_subdirs(path: str) -> List[str]:
    """Non-hidden sub-directory names of `path`, sorted (case-sensitive)."""
    return sorted(n for n in os.listdir(path) if not n.startswith(".") and os.path.isdir(os.path.join(path, n)))


def sorted_files(path: str) -> List[str]:
    """Non-hidden file names of `path`, sorted; sorting makes listings identical on every machine."""
    return sorted(n for n in os.listdir(path) if not n.startswith(".") and os.path.isfile(os.path.join(path, n)))


def unique_in_order(values: Sequence) -> list:
    return list(dict.fromkeys(values))
