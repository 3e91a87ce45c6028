"""Turning an exception that ends a run into what the user reads.

An *expected* failure is one the user can fix without reading code: a `UserError` (bad input,
refused resume, diverged training, ...), a missing file, or an operating-system refusal to write
(read-only folder, full disk, quota). It becomes one line that names the file or key and the fix.
Anything else is *unexpected*: its traceback belongs in the log.

A `UserError` raised inside a data-loader worker reaches the main process re-wrapped by PyTorch, with
the worker's whole traceback in its message; `expected_failure_line` recovers the original one line
and `worker_traceback` returns the rest for the log.
"""
from __future__ import annotations

import errno
from typing import Optional

from dassl.utils.tools import DISK_FULL_ERRNOS, NOT_WRITABLE_ERRNOS, UserError, describe_write_failure

__all__ = ["expected_failure_line", "worker_traceback", "unexpected_failure_line"]

_WORKER_MARKER = "Original Traceback (most recent call last):"


def _original_message(text: str) -> str:
    """The exception line at the end of a formatted traceback, without its ``module.Class: `` prefix."""
    lines = text.rstrip().splitlines()
    start = len(lines) - 1
    # The exception line is the last one that is not indented (frames and code lines are).
    while start > 0 and lines[start].startswith(" "):
        start -= 1
    message = "\n".join(lines[start:]).strip()
    head, sep, rest = message.partition(": ")
    if sep and " " not in head:
        message = rest
    return message


def worker_traceback(exc: BaseException) -> Optional[str]:
    """The traceback text a data-loader worker attached to `exc` (None when there is none)."""
    text = str(exc)
    return text if _WORKER_MARKER in text else None


def _one_line(text: str) -> str:
    return " ".join(part.strip() for part in text.strip().splitlines() if part.strip())


def _os_error_line(exc: OSError) -> Optional[str]:
    filename = exc.filename if exc.filename is not None else "?"
    reason = exc.strerror or str(exc)
    if exc.errno in DISK_FULL_ERRNOS:
        return describe_write_failure(str(filename), reason, exc.errno)
    if exc.errno in NOT_WRITABLE_ERRNOS:
        return (f'Cannot use "{filename}" ({reason}): output folders must be writable (choose another '
                f"--output-dir / OUTPUT_DIR) and input files readable")
    if exc.errno == errno.ENOTDIR:
        return f'Cannot use "{filename}" ({reason}): a part of this path is a file, not a folder; check the paths given'
    if exc.errno == errno.EISDIR:
        return f'Cannot use "{filename}" ({reason}): it is a folder where a file is expected; check the paths given'
    return None


def expected_failure_line(exc: BaseException) -> Optional[str]:
    """The one line (without ``Error:``) for an expected failure, or None when `exc` is unexpected."""
    if isinstance(exc, UserError):
        text = str(exc)
        if _WORKER_MARKER in text:
            text = _original_message(text.split(_WORKER_MARKER, 1)[1])
        return _one_line(text) or type(exc).__name__
    if isinstance(exc, FileNotFoundError):
        if exc.filename is not None:
            return f'File or folder not found: "{exc.filename}"'
        return _one_line(str(exc))
    if isinstance(exc, OSError):
        return _os_error_line(exc)
    return None


def unexpected_failure_line(exc: BaseException, log_file: Optional[str]) -> str:
    """The closing line of an unexpected failure: its type and first message line, and where the log is."""
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    where = f"; the full traceback is in {log_file}" if log_file else ""
    return f"unexpected {type(exc).__name__}{': ' + first if first else ''}{where}"
