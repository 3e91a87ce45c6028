"""Run the benchmark's commands (train.py through the protocol scripts) a few at a time, each logged.

On 2 CPU cores two single-threaded processes get more done than one two-threaded one for models this
small, so every job is started with OMP_NUM_THREADS / MKL_NUM_THREADS set to `threads`.
"""
from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable


@dataclass
class Job:
    """One command: a readable name, its argv, extra environment and the file its output goes to."""
    name: str
    argv: list[str]
    log_path: Path
    env: dict = field(default_factory=dict)
    seconds: float = 0.0
    returncode: int | None = None


class JobFailed(RuntimeError):
    """A benchmark command exited non-zero; the message holds the end of its log."""


def _tail(path: Path, lines: int = 25) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def run_jobs(jobs: list[Job], workers: int, threads: int, cwd: Path,
             log: Callable[[str], None] = print) -> list[Job]:
    """Run `jobs` with at most `workers` at once; raise `JobFailed` (after all finish) if any failed."""
    pending = list(jobs)
    running: list[tuple[Job, subprocess.Popen, float, object]] = []
    base_env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads),
                "PYTHON": sys.executable, "PYTHONUNBUFFERED": "1"}
    done = 0
    while pending or running:
        while pending and len(running) < max(1, workers):
            job = pending.pop(0)
            job.log_path.parent.mkdir(parents=True, exist_ok=True)
            handle = open(job.log_path, "w")
            proc = subprocess.Popen(job.argv, cwd=cwd, env={**base_env, **job.env}, stdout=handle,
                                    stderr=subprocess.STDOUT)
            running.append((job, proc, time.time(), handle))
        time.sleep(0.2)
        for entry in list(running):
            job, proc, started, handle = entry
            if proc.poll() is None:
                continue
            handle.close()
            running.remove(entry)
            job.returncode, job.seconds = proc.returncode, time.time() - started
            done += 1
            status = "ok" if proc.returncode == 0 else f"FAILED (exit {proc.returncode})"
            log(f"  [{done}/{len(jobs)}] {job.name}: {status} in {job.seconds:.0f}s")
    failed = [j for j in jobs if j.returncode != 0]
    if failed:
        details = "\n\n".join(f"--- {j.name} (log {j.log_path}):\n{_tail(j.log_path)}" for j in failed)
        raise JobFailed(f"{len(failed)} benchmark command(s) failed:\n{details}")
    return jobs
