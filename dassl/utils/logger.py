"""Copy everything printed to a log file (``<OUTPUT_DIR>/log.txt``), as Dassl does.

Differences from Dassl, on purpose:
- stderr is captured too (warnings and tracebacks belong in the log), except progress-bar
  redraws (chunks starting with a carriage return), which would only clutter the file;
- calling ``setup_logger`` again (e.g. several runs in one process) first detaches the previous
  log instead of stacking tees;
- the log file can fail (full disk, quota, removed folder) without taking the run's own error
  message with it: on the first failed write the file is dropped, one warning goes to the console,
  and printing continues on the console only. (Otherwise the failure would surface inside
  ``print`` calls far from its cause, or at exit as Python's "lost sys.stderr".)
- in a multi-process run (torchrun) only rank 0 logs: on the other processes `setup_logger` (or
  `quiet_console`) drops everything printed, including progress bars and warnings, until
  `close_logger`; `console_stderr` still reaches the real console (for a process's own error line).
"""
from __future__ import annotations

import os
import os.path as osp
import sys
import time
from typing import IO, Optional

from dassl.utils.distributed import is_main_process
from dassl.utils.tools import mkdir_if_missing

__all__ = ["setup_logger", "close_logger", "Logger", "log_path", "log_failure", "write_to_log", "quiet_console",
           "console_stderr"]


class _LogFile:
    """The open log file shared by the stdout and stderr tees; gives up quietly after a failure."""

    def __init__(self, path: str, stream: IO[str], warn_to: IO[str]) -> None:
        self.path = path
        self.stream: Optional[IO[str]] = stream
        self.warn_to = warn_to  # the console stream that gets the one warning (stderr)
        self.failure: Optional[OSError] = None

    @property
    def usable(self) -> bool:
        return self.stream is not None and not self.stream.closed

    def _give_up(self, error: OSError) -> None:
        self.failure = error
        stream, self.stream = self.stream, None
        try:
            stream.close()
        except OSError:
            pass  # the unflushed tail cannot be written either
        reason = error.strerror or str(error)
        try:
            self.warn_to.write(f'Warning: cannot write the log file "{self.path}" ({reason}); '
                               "from here on this run prints to the console only\n")
        except OSError:
            pass

    def write(self, text: str) -> None:
        if not self.usable:
            return
        try:
            self.stream.write(text)
        except OSError as error:
            self._give_up(error)

    def flush(self) -> None:
        if not self.usable:
            return
        try:
            self.stream.flush()
            os.fsync(self.stream.fileno())
        except OSError as error:
            self._give_up(error)

    def close(self) -> None:
        if self.stream is None:
            return
        try:
            self.stream.close()
        except OSError as error:
            self.failure = self.failure or error
        self.stream = None


class Logger:
    """A stream that writes to the console stream and to a log file.

    ``log_file`` is an open text file (or the shared `_LogFile` of `setup_logger`). Write errors of the
    log file never propagate: the file is dropped with one warning on the console.
    """

    def __init__(self, console: IO[str], log_file, skip_redraws: bool = False) -> None:
        self.console = console
        self.log = log_file if isinstance(log_file, _LogFile) else \
            _LogFile(getattr(log_file, "name", "?"), log_file, warn_to=console)
        self.skip_redraws = skip_redraws

    @property
    def file(self) -> Optional[IO[str]]:
        return self.log.stream

    def write(self, msg: str) -> int:
        self.console.write(msg)
        if not (self.skip_redraws and msg.startswith("\r")):
            self.log.write(msg)
        return len(msg)

    def flush(self) -> None:
        self.console.flush()
        self.log.flush()

    def isatty(self) -> bool:
        return self.console.isatty()

    def __getattr__(self, name: str):
        # Anything else (encoding, fileno, ...) behaves like the console stream.
        return getattr(self.console, name)


class _Discard:
    """Stands in for a console stream of a process that must not print (not rank 0): drops every write."""

    def __init__(self, console: IO[str]) -> None:
        self.console = console

    def write(self, msg: str) -> int:
        return len(msg)

    def flush(self) -> None:
        pass

    def isatty(self) -> bool:
        return False

    def __getattr__(self, name: str):
        return getattr(self.console, name)


_active: Optional[dict] = None
_quiet: Optional[dict] = None  # the console streams replaced by `quiet_console`


def quiet_console() -> None:
    """Drop everything this process prints (stdout and stderr) until `close_logger`.

    For the processes other than rank 0 of a multi-process run, whose output would repeat rank 0's.
    """
    global _quiet
    if _quiet is not None:
        return
    _quiet = {"out": _Discard(sys.stdout), "err": _Discard(sys.stderr)}
    sys.stdout, sys.stderr = _quiet["out"], _quiet["err"]


def console_stderr() -> IO[str]:
    """The real console's stderr, also while this process is quiet or logging (for its own error line)."""
    if _quiet is not None:
        return _quiet["err"].console
    if _active is not None:
        return _active["err"].console
    return sys.stderr


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


def log_path() -> Optional[str]:
    """The path of the active log file (None when no log is set up)."""
    return _active["log"].path if _active is not None else None


def log_failure() -> Optional[OSError]:
    """The error that made the active log file unusable, if any."""
    return _active["log"].failure if _active is not None else None


def write_to_log(text: str) -> bool:
    """Write `text` to the active log file only (not the console); False when there is no usable log."""
    if _active is None or not _active["log"].usable:
        return False
    _active["log"].write(text if text.endswith("\n") else text + "\n")
    _active["log"].flush()
    return _active["log"].usable


def close_logger(discard: bool = False) -> None:
    """Detach the active log file (if any) and restore the console streams.

    With `discard` the log file is deleted as well (used for a run that failed before it started, so
    that its log does not push the next run's log to ``log.txt-<time>``).
    """
    global _active, _quiet
    if _quiet is not None:
        if sys.stdout is _quiet["out"]:
            sys.stdout = _quiet["out"].console
        if sys.stderr is _quiet["err"]:
            sys.stderr = _quiet["err"].console
        _quiet = None
    if _active is None:
        return
    if sys.stdout is _active["out"]:
        sys.stdout = _active["out"].console
    if sys.stderr is _active["err"]:
        sys.stderr = _active["err"].console
    log = _active["log"]
    log.close()
    _active = None
    if discard:
        try:
            os.remove(log.path)
        except OSError:
            pass


def setup_logger(output: Optional[str] = None) -> Optional[str]:
    """Tee stdout and stderr into a log file and return its path (None: do nothing).

    ``output`` is a folder (the log is ``<output>/log.txt``) or a path ending in ``.txt``/``.log``.
    An existing log is never overwritten: the new one gets a ``-<timestamp>`` suffix, and a line
    says which file is being written. On a process other than rank 0 nothing is logged: the console
    is made quiet (`quiet_console`) and None is returned.
    """
    global _active
    if not is_main_process():
        quiet_console()
        return None
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
    stream = open(fpath, "w", encoding="utf-8", buffering=1)  # line-buffered: `tail -f` works
    log = _LogFile(fpath, stream, warn_to=sys.stderr)
    out = Logger(sys.stdout, log)
    err = Logger(sys.stderr, log, skip_redraws=True)
    sys.stdout, sys.stderr = out, err
    _active = {"out": out, "err": err, "log": log}
    if fpath != wanted:
        print(f'Log file "{wanted}" already exists; writing this run\'s log to "{fpath}"')
    return fpath
