"""Copy everything printed to a log file (``<OUTPUT_DIR>/log.txt``), as Dassl does.

Differences from Dassl, on purpose:
- stderr is captured too (warnings and tracebacks belong in the log), except progress-bar
  redraws (chunks starting with a carriage return), which would only clutter the file;
- calling ``setup_logger`` again (e.g. several runs in one process) first detaches the previous
  log instead of stacking tees.
"""
from __future__ import annotations

import os
import os.path as osp
import sys
import time
from typing import IO, Optional

from dassl.utils.tools import mkdir_if_missing

__all__ = ["setup_logger", "close_logger", "Logger"]


class Logger:
    """A stream that writes to the console stream and to an open log file."""

    def __init__(self, console: IO[str], log_file: IO[str], skip_redraws: bool = False) -> None:
        self.console = console
        self.file = log_file
        self.skip_redraws = skip_redraws

    def write(self, msg: str) -> int:
        self.console.write(msg)
        if not self.file.closed and not (self.skip_redraws and msg.startswith("\r")):
            self.file.write(msg)
        return len(msg)

    def flush(self) -> None:
        self.console.flush()
        if not self.file.closed:
            self.file.flush()
            os.fsync(self.file.fileno())

    def isatty(self) -> bool:
        return self.console.isatty()

    def __getattr__(self, name: str):
        # Anything else (encoding, fileno, ...) behaves like the console stream.
        return getattr(self.console, name)


_active: Optional[dict] = None


def _free_log_path(fpath: str) -> str:
    """Return ``fpath`` if free, else ``fpath-<timestamp>`` (with a counter if needed)."""
    if not osp.exists(fpath):
        return fpath
    stamped = fpath + time.strftime("-%Y-%m-%d-%H-%M-%S")
    candidate, n = stamped, 1
    while osp.exists(candidate):
        candidate = f"{stamped}-{n}"
        n += 1
    return candidate


def close_logger() -> None:
    """Detach the active log file (if any) and restore the console streams."""
    global _active
    if _active is None:
        return
    if sys.stdout is _active["out"]:
        sys.stdout = _active["out"].console
    if sys.stderr is _active["err"]:
        sys.stderr = _active["err"].console
    _active["file"].close()
    _active = None


def setup_logger(output: Optional[str] = None) -> Optional[str]:
    """Tee stdout and stderr into a log file and return its path (None: do nothing).

    ``output`` is a folder (the log is ``<output>/log.txt``) or a path ending in ``.txt``/``.log``.
    An existing log is never overwritten: the new one gets a ``-<timestamp>`` suffix, and a line
    says which file is being written.
    """
    global _active
    if not output:
        return None
    if output.endswith(".txt") or output.endswith(".log"):
        fpath = output
    else:
        fpath = osp.join(output, "log.txt")
    close_logger()
    mkdir_if_missing(osp.dirname(osp.abspath(fpath)))
    wanted = fpath
    fpath = _free_log_path(fpath)
    log_file = open(fpath, "w", encoding="utf-8", buffering=1)  # line-buffered: `tail -f` works
    out = Logger(sys.stdout, log_file)
    err = Logger(sys.stderr, log_file, skip_redraws=True)
    sys.stdout, sys.stderr = out, err
    _active = {"out": out, "err": err, "file": log_file}
    if fpath != wanted:
        print(f'Log file "{wanted}" already exists; writing this run\'s log to "{fpath}"')
    return fpath
