"""One run per output folder: a lock file that names its owner.

``<OUTPUT_DIR>/run.lock`` holds the owner's pid, host name and start time (JSON). It is created
complete in one step (written to a temporary file, then hard-linked to its name, which fails if the
name exists), so another process never reads half a lock. A second run started into the same folder
stops at once with a message naming the owner. A lock whose owner is gone (same host, pid no longer
running, e.g. after ``kill -9``) is stale and is taken over with a note; a lock from another host
cannot be checked, so the message says how to remove it by hand.
"""
from __future__ import annotations

import errno
import json
import os
import os.path as osp
import socket
import time
from typing import Any, Dict, Optional, Set

from dassl.utils.tools import UserError, create_temporary_file, mkdir_if_missing

__all__ = ["LOCK_FILE_NAME", "FolderInUseError", "RunLock"]

LOCK_FILE_NAME = "run.lock"

# Lock paths held by this process (a nested acquisition of the same folder is refused).
_held: Set[str] = set()


class FolderInUseError(UserError):
    """Another live run holds the output folder's lock."""


def _pid_is_running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by another user
        return True
    except OSError:
        return True
    return True


class RunLock:
    """Context manager holding ``<folder>/run.lock`` for the duration of a run."""

    def __init__(self, folder: str) -> None:
        self.folder = folder
        self.path = osp.abspath(osp.join(folder, LOCK_FILE_NAME))
        self.held = False

    # ----------------------------------------------------------------- file
    def _owner_record(self) -> Dict[str, Any]:
        return {"pid": os.getpid(), "host": socket.gethostname(),
                "started": time.strftime("%Y-%m-%d %H:%M:%S")}

    def _try_create(self) -> bool:
        """Create the lock with our record; False when it already exists."""
        tmp = create_temporary_file(osp.dirname(self.path), LOCK_FILE_NAME)
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(self._owner_record(), f)
        try:
            os.link(tmp, self.path)
            return True
        except FileExistsError:
            return False
        except OSError as exc:
            if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV):
                raise
            return self._create_without_links(tmp)
        finally:
            try:
                os.remove(tmp)
            except FileNotFoundError:
                pass

    def _create_without_links(self, tmp: str) -> bool:
        """For file systems without hard links: exclusive create, then write the record."""
        try:
            fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666)
        except FileExistsError:
            return False
        with os.fdopen(fd, "w", encoding="utf-8") as f, open(tmp, encoding="utf-8") as source:
            f.write(source.read())
        return True

    def read_owner(self) -> Optional[Dict[str, Any]]:
        """The lock's record, or None when it is missing or unreadable."""
        try:
            with open(self.path, encoding="utf-8") as f:
                record = json.load(f)
        except (OSError, ValueError):
            return None
        return record if isinstance(record, dict) else None

    def _is_stale(self, owner: Dict[str, Any]) -> bool:
        if owner.get("host") != socket.gethostname():
            return False
        pid = owner.get("pid")
        if not isinstance(pid, int):
            return False
        if pid == os.getpid():
            # Our own pid but not held by us: a leftover of an earlier process that had our pid
            # (containers reuse small pids).
            return self.path not in _held
        return not _pid_is_running(pid)

    # ----------------------------------------------------------------- acquire / release
    def acquire(self) -> "RunLock":
        if self.path in _held:
            raise FolderInUseError(f'Output folder "{self.folder}" is already used by a run in this process; '
                                   "give each run its own --output-dir")
        mkdir_if_missing(self.folder)
        for _ in range(3):
            if self._try_create():
                self.held = True
                _held.add(self.path)
                return self
            owner = self.read_owner()
            if owner is not None and self._is_stale(owner):
                print(f'Note: removing the stale lock "{self.path}" of a run that no longer exists '
                      f"(pid {owner.get('pid')}, started {owner.get('started', '?')})")
                try:
                    os.remove(self.path)
                except FileNotFoundError:
                    pass
                continue
            raise FolderInUseError(self._in_use_message(owner))
        raise FolderInUseError(self._in_use_message(self.read_owner()))

    def _in_use_message(self, owner: Optional[Dict[str, Any]]) -> str:
        if owner is None:
            who = "another run (its lock file holds no readable owner)"
        else:
            who = (f"another run (pid {owner.get('pid')} on host {owner.get('host')}, "
                   f"started {owner.get('started', '?')})")
        return (f'Output folder "{self.folder}" is in use by {who}: wait for it to finish or choose another '
                f'--output-dir; if no run uses this folder any more, delete "{self.path}"')

    def release(self) -> None:
        """Remove the lock if this object holds it (never someone else's)."""
        if not self.held:
            return
        self.held = False
        _held.discard(self.path)
        owner = self.read_owner()
        if owner is not None and owner.get("pid") != os.getpid():
            return
        try:
            os.remove(self.path)
        except FileNotFoundError:
            pass

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc_info: Any) -> None:
        self.release()
