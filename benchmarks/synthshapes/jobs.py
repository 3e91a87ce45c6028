"""Run the benchmark's commands a few at a time, each logged.

On 2 CPU cores two single-threaded processes get more done than one two-threaded one for models this
small, so every job runs with OMP_NUM_THREADS / MKL_NUM_THREADS (and torch's thread count) set to `threads`.

Two runners:
- `run_jobs`: any command, one fresh subprocess per job (pretraining, which sets its own threads);
- `TrainPool` / `run_train_jobs`: train.py runs only, in a few long-lived worker processes that import
  torch and `train` once and call `train.cli(argv)` job after job. This saves the per-process start-up
  (imports, first-op warm-up: seconds per run) and lets runs on the same dataset share the process-wide
  caches (the teacher-feature cache of trainers/teacher_cache.py and the image cache of
  dassl/data/image_cache.py). The argv of each run comes from scripts/runs.py, as for the protocol scripts.
"""
from __future__ import annotations

import multiprocessing
import os
import queue
import subprocess
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Callable


@dataclass
class Job:
    """One command: a readable name, its argv and the file its output goes to.

    For `run_train_jobs`, `argv` holds only train.py's arguments and `group` (e.g. the dataset) says which
    jobs should preferably share a worker. `cost` is the job's expected share of the work (e.g. its
    training steps), used only to estimate the time left; jobs of one batch should use the same unit.
    """
    name: str
    argv: list[str]
    log_path: Path
    seconds: float = 0.0
    returncode: int | None = None
    group: str = ""
    cost: float = 1.0


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
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads), "PYTHONUNBUFFERED": "1"}
    progress = Progress(jobs, log)
    while pending or running:
        while pending and len(running) < max(1, workers):
            job = pending.pop(0)
            job.log_path.parent.mkdir(parents=True, exist_ok=True)
            handle = open(job.log_path, "w")
            proc = subprocess.Popen(job.argv, cwd=cwd, env=env, stdout=handle,
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
            progress.finished(job)
    _raise_if_failed(jobs)
    return jobs


def _clock(seconds: float) -> str:
    """A duration as 1h02m, 3m05s or 42s."""
    seconds = int(round(seconds))
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


class Progress:
    """The progress line of a batch of jobs: one per finished job, with the batch's elapsed wall time and an
    estimate of the time left (elapsed time x cost left / cost done, with `Job.cost` as the unit)."""

    def __init__(self, jobs: list[Job], log: Callable[[str], None]) -> None:
        self.total, self.log, self.start = len(jobs), log, time.time()
        self.cost_total, self.cost_done, self.done = sum(j.cost for j in jobs), 0.0, 0

    def finished(self, job: Job, why: str = "") -> None:
        """Log `job` (finished, with its returncode and seconds set)."""
        self.done += 1
        self.cost_done += job.cost
        status = "ok" if job.returncode == 0 else f"FAILED ({why + ', ' if why else ''}exit {job.returncode})"
        elapsed = time.time() - self.start
        line = f"  [{self.done}/{self.total}] {job.name}: {status} in {job.seconds:.0f}s"
        if self.done < self.total and self.cost_done > 0:
            left = elapsed * max(0.0, self.cost_total - self.cost_done) / self.cost_done
            line += f" (elapsed {_clock(elapsed)}, about {_clock(left)} left)"
        elif self.done == self.total:
            line += f" (elapsed {_clock(elapsed)}, batch done)"
        self.log(line)


def _raise_if_failed(jobs: list[Job]) -> None:
    failed = [j for j in jobs if j.returncode != 0]
    if failed:
        details = "\n\n".join(f"--- {j.name} (log {j.log_path}):\n{_tail(j.log_path)}" for j in failed)
        raise JobFailed(f"{len(failed)} benchmark command(s) failed:\n{details}")


# ----------------------------------------------------------------- train.py jobs in long-lived workers
def _call_logged(fn: Callable[[], int], log_path: str) -> tuple[int, str]:
    """Run ``fn()`` with stdout and stderr (Python's and the native ones) in `log_path`.

    Returns (exit code, reason): fn's return value, a SystemExit's code, or 1 for an exception, whose
    traceback goes into the log. Any log.txt tee that train.py set up is closed afterwards.
    """
    from dassl.utils import close_logger

    Path(log_path).parent.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    saved_streams, saved_fds = (sys.stdout, sys.stderr), (os.dup(1), os.dup(2))
    with open(log_path, "w", buffering=1) as handle:
        os.dup2(handle.fileno(), 1)
        os.dup2(handle.fileno(), 2)
        sys.stdout = sys.stderr = handle
        try:
            code, why = fn(), ""
        except SystemExit as exc:  # argparse errors, sys.exit() in the run
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
            why = "" if code == 0 else "SystemExit"
            if isinstance(exc.code, str):
                print(exc.code, file=sys.stderr)
        except Exception as exc:  # noqa: BLE001  (any failure of one run must not end the worker)
            traceback.print_exc()
            code, why = 1, type(exc).__name__
        finally:
            close_logger()
            sys.stdout.flush()
            sys.stdout, sys.stderr = saved_streams
            for fd, saved in zip((1, 2), saved_fds):
                os.dup2(saved, fd)
                os.close(saved)
    return code, why


def _train_worker(cwd: str, threads: int, tasks, results) -> None:
    """Worker process: import torch and train.py once, then run (index, argv, log) tasks until None."""
    import gc

    os.chdir(cwd)
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    import torch

    torch.set_num_threads(threads)
    import train

    while (task := tasks.get()) is not None:
        index, argv, log_path = task
        start = time.time()
        sys.argv = ["train.py", *argv]  # as if started as `python train.py ARGV` (argparse's messages)
        code, why = _call_logged(lambda: train.cli(argv), log_path)
        gc.collect()
        results.put((index, code, why, time.time() - start))


def _next_job(jobs: list[Job], pending: list[int], own_group: str | None, other_groups: set) -> int:
    """The next job (one of `pending`) for a free worker: its own group first (its teacher cache is warm),
    then the largest group no other worker is on, then any (no worker waits while jobs remain)."""
    for index in pending:
        if jobs[index].group == own_group:
            return index
    sizes: dict[str, int] = {}
    for index in pending:
        if jobs[index].group not in other_groups:
            sizes[jobs[index].group] = sizes.get(jobs[index].group, 0) + 1
    if sizes:
        group = max(sizes, key=sizes.get)
        return next(index for index in pending if jobs[index].group == group)
    return pending[0]


class _Worker:
    """One long-lived train.py process with its own task queue."""

    def __init__(self, ctx, cwd: Path, threads: int, results) -> None:
        self.tasks = ctx.Queue()
        self.process = ctx.Process(target=_train_worker, args=(str(cwd), threads, self.tasks, results), daemon=True)
        self.process.start()
        self.group: str | None = None
        self.job: tuple[int, float] | None = None  # (job index, start time) while busy

    def give(self, index: int, job: Job) -> None:
        """Send job `index` to this worker, which then counts as busy and warm for the job's group."""
        self.group, self.job = job.group, (index, time.time())
        self.tasks.put((index, list(job.argv), str(job.log_path)))

    def stop(self) -> None:
        """Ask the worker to exit after its current job; terminate it if it does not within 30 s."""
        if self.process.is_alive():
            self.tasks.put(None)
            self.process.join(timeout=30)
        if self.process.is_alive():
            self.process.terminate()
            self.process.join()


def _spawn_workers(n: int, cwd: Path, threads: int, results, ctx) -> list[_Worker]:
    """Start `n` workers with OMP/MKL thread counts in their environment (read when torch loads).

    Set here, in the parent, because a spawned child first re-imports the parent's main module, which may
    import torch before the worker function runs.
    """
    wanted = {"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads), "PYTHONUNBUFFERED": "1"}
    saved = {k: os.environ.get(k) for k in wanted}
    os.environ.update(wanted)
    try:
        return [_Worker(ctx, cwd, threads, results) for _ in range(n)]
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


class TrainPool:
    """Long-lived train.py worker processes that stay warm from one batch of jobs to the next.

    Workers are started on demand (up to `workers`) and keep their per-process caches (imports, the
    teacher cache, the image cache) until `close()`; use it as a context manager. Started with
    multiprocessing's "spawn", so the caller's main module must be import-safe (an
    ``if __name__ == "__main__":`` guard).
    """

    def __init__(self, workers: int, threads: int, cwd: Path, log: Callable[[str], None] = print) -> None:
        self.max_workers, self.threads, self.cwd, self.log = max(1, workers), threads, cwd, log
        self._ctx = multiprocessing.get_context("spawn")
        self._results = None
        self._pool: list[_Worker] = []

    def __enter__(self) -> "TrainPool":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _ensure_workers(self, wanted: int) -> list[_Worker]:
        """Drop dead workers and start new ones until `wanted` (at most `max_workers`) are alive."""
        if self._results is None:
            self._results = self._ctx.Queue()
        self._pool = [w for w in self._pool if w.process.is_alive()]
        missing = min(wanted, self.max_workers) - len(self._pool)
        if missing > 0:
            self._pool += _spawn_workers(missing, self.cwd, self.threads, self._results, self._ctx)
        return self._pool

    def run(self, jobs: list[Job]) -> list[Job]:
        """Run train.py jobs (`Job.argv` = train.py's arguments); see `run_train_jobs`."""
        if not jobs:
            return jobs
        for job in jobs:
            job.log_path.parent.mkdir(parents=True, exist_ok=True)
        pool = self._ensure_workers(len(jobs))
        results, log = self._results, self.log
        pending, progress = list(range(len(jobs))), Progress(jobs, log)

        def finish(index: int, code: int, why: str, seconds: float) -> None:
            jobs[index].returncode, jobs[index].seconds = code, seconds
            progress.finished(jobs[index], why)

        def feed(worker: _Worker) -> None:
            if pending and worker.process.is_alive():
                index = _next_job(jobs, pending, worker.group, {w.group for w in pool if w is not worker})
                pending.remove(index)
                worker.give(index, jobs[index])

        for worker in pool:
            feed(worker)
        while any(w.job for w in pool):
            try:
                index, code, why, seconds = results.get(timeout=1.0)
            except queue.Empty:
                for worker in pool:
                    if worker.job and not worker.process.is_alive():
                        index, started = worker.job
                        worker.job = None
                        finish(index, worker.process.exitcode or 1, "worker process died", time.time() - started)
                continue
            worker = next(w for w in pool if w.job and w.job[0] == index)
            worker.job = None
            finish(index, code, why, seconds)
            feed(worker)
        for index in pending:  # every worker died
            finish(index, 1, "not run: no worker process left", 0.0)
        _raise_if_failed(jobs)
        return jobs

    def close(self) -> None:
        """Stop every worker (each finishes its current job first)."""
        for worker in self._pool:
            worker.stop()
        self._pool = []


def run_train_jobs(jobs: list[Job], workers: int, threads: int, cwd: Path,
                   log: Callable[[str], None] = print) -> list[Job]:
    """Run train.py jobs (`Job.argv` = train.py's arguments) in `workers` long-lived processes.

    A free worker takes the next job (`_next_job`: same `group` first). Each job's stdout/stderr go to its
    `log_path`; name, status and seconds are logged as `run_jobs` does, and `JobFailed` is raised after
    all jobs finished if any failed (non-zero `train.cli` status, an exception, or a dead worker).
    The workers end with the call; `TrainPool` keeps them for later batches.
    """
    with TrainPool(workers, threads, cwd, log) as pool:
        return pool.run(jobs)
