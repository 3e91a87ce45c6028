"""Where a reader keeps the files it derives from a dataset: few-shot samples and a rebuilt split JSON.

Clusters often mount datasets read-only, so these files may have to live outside the dataset folder.
Files are looked up first in the dataset folder (where CoOp-family code and earlier runs put them),
then in the cache folder. New files go to:

1. the folder named by ``DATASET.FEWSHOT_CACHE_DIR``, else by the environment variable
   ``AME_FEWSHOT_CACHE``, when one is set (then the dataset folder is never written);
2. otherwise the dataset folder itself, when it is writable (CoOp's behaviour);
3. otherwise the user cache folder, ``$XDG_CACHE_HOME/ame/fewshot`` (``~/.cache/ame/fewshot``).

Inside a cache folder each dataset folder gets its own sub-folder, ``<folder name>-<hash of its real
path>``, laid out like the dataset folder (``split_fewshot/shot_<K>-seed_<SEED>.json``, the split JSON),
so two data roots holding the same dataset never share samples. The file contents do not depend on
where they are stored: paths inside are relative to the dataset folder.
"""
from __future__ import annotations

import errno
import hashlib
import os
from typing import Callable, List, Optional, Tuple

from dassl.utils import UserError

CONFIG_KEY = "DATASET.FEWSHOT_CACHE_DIR"
ENV_VAR = "AME_FEWSHOT_CACHE"
# Errors that mean "this folder cannot be written" (as opposed to e.g. a full disk).
NOT_WRITABLE_ERRNOS = (errno.EACCES, errno.EPERM, errno.EROFS)


def user_cache_base() -> str:
    """``$XDG_CACHE_HOME/ame/fewshot``, or ``~/.cache/ame/fewshot`` when XDG_CACHE_HOME is unset."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "ame", "fewshot")


def configured_base(cfg) -> Tuple[str, str]:
    """``(folder, what set it)`` from ``DATASET.FEWSHOT_CACHE_DIR`` or ``$AME_FEWSHOT_CACHE``; ``("", "")`` if unset."""
    value = getattr(cfg.DATASET, "FEWSHOT_CACHE_DIR", "")
    if value:
        return os.path.abspath(os.path.expanduser(value)), CONFIG_KEY
    value = os.environ.get(ENV_VAR, "")
    if value:
        return os.path.abspath(os.path.expanduser(value)), f"${ENV_VAR}"
    return "", ""


def shadow_folder_name(dataset_dir: str) -> str:
    """``<folder name>-<10 hex of sha256(real path)>``: the dataset's own sub-folder in a cache folder."""
    real = os.path.realpath(dataset_dir)
    digest = hashlib.sha256(real.encode("utf-8")).hexdigest()[:10]
    return f"{os.path.basename(real)}-{digest}"


def is_writable_dir(path: str) -> bool:
    """Whether files can be created at `path`: the nearest existing path on its way up is a writable folder.

    `os.access` honours permission bits and read-only mounts; note that root passes permission bits.
    """
    path = os.path.abspath(path)
    while not os.path.lexists(path):
        parent = os.path.dirname(path)
        if parent == path:
            return False
        path = parent
    return os.path.isdir(path) and os.access(path, os.W_OK | os.X_OK)


class CacheLocation:
    """Finds and writes one dataset folder's derived files (paths given relative to the dataset folder)."""

    def __init__(self, cfg, dataset_dir: str, dataset_name: str):
        self.dataset_dir = dataset_dir
        self.dataset_name = dataset_name
        base, self.configured_by = configured_base(cfg)
        self.cache_dir = os.path.join(base or user_cache_base(), shadow_folder_name(dataset_dir))
        self._fallback_noted = False

    def search_dirs(self) -> List[str]:
        """Folders looked in, first match wins: the dataset folder, then the cache folder."""
        return [self.dataset_dir, self.cache_dir]

    def find(self, rel_path: str) -> Optional[str]:
        """The first existing file ``<folder>/<rel_path>`` of :meth:`search_dirs`, or None."""
        for folder in self.search_dirs():
            path = os.path.join(folder, rel_path)
            if os.path.isfile(path):
                return path
        return None

    def write(self, rel_path: str, write: Callable[[str], None]) -> str:
        """Call ``write(path)`` for the place new files go (see the module docstring); return the path.

        When the dataset folder turns out not to be writable, the file goes to the cache folder
        instead, with a one-line note. A cache folder that cannot be written is a `UserError`.
        """
        if not self.configured_by:
            target = os.path.join(self.dataset_dir, rel_path)
            if is_writable_dir(os.path.dirname(target)):
                try:
                    write(target)
                    return target
                except OSError as exc:
                    if exc.errno not in NOT_WRITABLE_ERRNOS:
                        raise
            self._note_fallback()
        target = os.path.join(self.cache_dir, rel_path)
        try:
            write(target)
        except OSError as exc:
            where = self.configured_by or "the user cache folder"
            raise UserError(f"{self.dataset_name}: cannot write {target} ({exc.strerror or exc}), which {where} "
                            f"chose; set {CONFIG_KEY} (or ${ENV_VAR}) to a writable folder.") from None
        return target

    def _note_fallback(self) -> None:
        if not self._fallback_noted:
            self._fallback_noted = True
            print(f"Note: {self.dataset_name}: dataset folder {self.dataset_dir} is not writable; files derived "
                  f"from it (few-shot samples, a rebuilt split) go to {self.cache_dir} "
                  f"(choose the place with {CONFIG_KEY} or ${ENV_VAR})")
