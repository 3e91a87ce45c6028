"""Run a function in N processes as torchrun would start them (for the multi-process tests, CPU + gloo),
and `cli`: train.py's entry point with its stderr captured.

The processes are forked from the test process, so they share its imports and registrations (a toy
trainer defined in a test module exists in them too) and start in a fraction of a second; each gets
torchrun's environment variables (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT) and one
CPU thread. `train.cli` then joins the process group itself, exactly as under torchrun.
"""
from __future__ import annotations

import contextlib
import io
import multiprocessing
import os
import queue
import signal
import socket
import traceback
from pathlib import Path
from typing import Any, Callable, List, Sequence, Tuple


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _child(fn: Callable, args: Sequence[Any], rank: int, nprocs: int, port: int, results) -> None:
    import torch

    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(nprocs), LOCAL_WORLD_SIZE=str(nprocs),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    try:
        results.put((rank, "ok", fn(*args)))
    except BaseException:  # noqa: BLE001  (reported to the parent)
        results.put((rank, "error", traceback.format_exc()))


def run_processes(fn: Callable, nprocs: int = 2, args: Sequence[Any] = (), timeout: float = 120.0) -> List[Any]:
    """``fn(*args)`` in `nprocs` forked processes (ranks 0..N-1); returns their results in rank order.

    A process that raises fails the call with its traceback; processes still running after `timeout`
    seconds (e.g. waiting for a dead peer) are killed.
    """
    context = multiprocessing.get_context("fork")
    results = context.Queue()
    port = free_port()
    processes = [context.Process(target=_child, args=(fn, args, rank, nprocs, port, results))
                 for rank in range(nprocs)]
    for process in processes:
        process.start()
    outcomes = {}
    try:
        for _ in processes:
            rank, status, value = results.get(timeout=timeout)
            outcomes[rank] = (status, value)
    except queue.Empty:
        pass
    finally:
        for process in processes:
            process.join(timeout=5)
            if process.is_alive():
                os.kill(process.pid, signal.SIGKILL)
                process.join()
    missing = [rank for rank in range(nprocs) if rank not in outcomes]
    if missing:
        raise TimeoutError(f"ranks {missing} did not finish within {timeout} s")
    errors = {rank: value for rank, (status, value) in outcomes.items() if status == "error"}
    if errors:
        raise RuntimeError("\n".join(f"rank {rank}:\n{text}" for rank, text in sorted(errors.items())))
    return [outcomes[rank][1] for rank in range(nprocs)]


def cli(argv: Sequence[str]) -> Tuple[int, str]:
    """``train.cli(argv)`` in this process; returns (exit status, what it printed to stderr)."""
    import train

    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        status = train.cli(list(argv))
    return status, err.getvalue()


def result_lines(log: Path) -> List[str]:
    """The evaluator's result lines (``* total: ...``, ``* accuracy: ...``, per-class lines) of a log."""
    return [line for line in log.read_text().splitlines() if line.startswith("* ")]
