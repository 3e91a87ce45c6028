"""Fault injection: a run stopped at every file write (kill -9 and Ctrl-C) and mid-epoch, then started
again with the same command, ends exactly like an uninterrupted run (checkpoints, optimiser state,
random states, run state, results.json), leaving no temporary file or lock behind.

The stopped runs are forked from the test process (no fresh interpreter to import torch into), and
die with ``os._exit`` inside the patched ``os.replace`` -- like ``kill -9``: no cleanup code runs,
the temporary file of the interrupted write and the run lock stay on disk. Ctrl-C is a
KeyboardInterrupt raised at the same point, in-process.
"""
from __future__ import annotations

import json
import os
import warnings
from pathlib import Path
from typing import Callable, List

import pytest
import torch

import toy_engine  # noqa: F401  (registers ToyFolder and ToyLinearProbe)
from dassl.utils.torchtools import load_checkpoint
from toy_engine import ToyLinearProbe, make_image_folder, toy_yaml

train = pytest.importorskip("train")

torch.set_num_threads(1)

KILLED = 137  # exit status of the forked child when it "is killed"
TWO_EPOCHS_YAML = toy_yaml(2, promptkd_style=True)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """Data, config and the uninterrupted reference run (with the list of files it renames into place)."""
    root = tmp_path_factory.mktemp("faults")
    data = make_image_folder(root / "data")
    config = root / "toy.yaml"
    config.write_text(TWO_EPOCHS_YAML)

    def argv(out: Path) -> List[str]:
        return ["--root", str(data), "--config-file", str(config), "--trainer", "ToyLinearProbe", "--seed", "0",
                "--output-dir", str(out), "DATASET.NAME", "ToyFolder", "USE_CUDA", "False"]

    reference = root / "reference"
    renamed = []
    real_replace = os.replace

    def recording_replace(src, dst, *args, **kwargs):
        if str(dst).startswith(str(reference)):
            renamed.append(os.path.relpath(dst, reference))
        return real_replace(src, dst, *args, **kwargs)

    os.replace = recording_replace
    try:
        assert train.cli(argv(reference)) == 0
    finally:
        os.replace = real_replace
    return {"argv": argv, "reference": reference, "renamed": renamed, "root": root}


def _equal(a, b, where: str) -> None:
    if torch.is_tensor(a):
        assert torch.is_tensor(b) and a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b), where
    elif isinstance(a, dict):
        assert isinstance(b, dict) and set(a) == set(b), f"{where}: keys {sorted(a)} != {sorted(b)}"
        for key in a:
            _equal(a[key], b[key], f"{where}.{key}")
    elif isinstance(a, (list, tuple)):
        assert isinstance(b, (list, tuple)) and len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            _equal(x, y, f"{where}[{i}]")
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"


def assert_same_outcome(reference: Path, out: Path) -> None:
    """Same checkpoint files with identical contents, same results.json, nothing left over."""
    ref_files = sorted(p.name for p in (reference / "probe").iterdir())
    assert sorted(p.name for p in (out / "probe").iterdir()) == ref_files
    assert ref_files == ["checkpoint", "model-best.pth.tar", "model.pth.tar-2"]
    assert (out / "probe" / "checkpoint").read_text() == (reference / "probe" / "checkpoint").read_text()
    for name in ("model-best.pth.tar", "model.pth.tar-2"):
        _equal(load_checkpoint(str(reference / "probe" / name)), load_checkpoint(str(out / "probe" / name)), name)
    assert json.loads((out / "results.json").read_text()) == json.loads((reference / "results.json").read_text())
    leftovers = [p.name for p in out.iterdir() if p.name.endswith(".tmp") or p.name == "run.lock"]
    assert leftovers == []


def _run_forked(body: Callable[[], int]) -> int:
    """Run `body` in a forked child; return its exit status (the child never returns into pytest)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # "process is multi-threaded" on 3.12+
        pid = os.fork()
    if pid == 0:
        status = 1
        try:
            status = body()
        except BaseException:  # noqa: BLE001
            status = 3
        finally:
            os._exit(status)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


def _stop_at_rename(out: Path, n: int, stop: Callable[[], None]) -> Callable:
    """An os.replace that calls `stop()` instead of the n-th rename into `out`."""
    real_replace = os.replace
    count = [0]

    def replace(src, dst, *args, **kwargs):
        if str(dst).startswith(str(out)):
            count[0] += 1
            if count[0] == n:
                stop()
        return real_replace(src, dst, *args, **kwargs)

    return replace


def _killed_at_rename(argv: List[str], out: Path, n: int) -> int:
    def body() -> int:
        os.replace = _stop_at_rename(out, n, lambda: os._exit(KILLED))
        return train.cli(argv)

    return _run_forked(body)


def _interrupt():
    raise KeyboardInterrupt


def test_reference_run_writes_every_file_atomically(setup):
    renamed = setup["renamed"]
    # epoch 1: best + pointer, resume point; epoch 2: (best + pointer), final + pointer; results.json
    assert renamed.count("probe/model-last.pth.tar") == 1
    assert renamed.count("probe/model.pth.tar-2") == 1 and renamed[-1] == "results.json"
    assert len(renamed) >= 6
    mode = (setup["reference"] / "probe" / "model-best.pth.tar").stat().st_mode & 0o777
    umask = os.umask(0)
    os.umask(umask)
    assert mode == 0o666 & ~umask  # not mkstemp's 0o600


def test_kill_at_every_write_then_same_command_resumes_exactly(setup, capsys):
    for n in range(1, len(setup["renamed"]) + 1):
        out = setup["root"] / f"kill{n}"
        argv = setup["argv"](out)
        assert _killed_at_rename(argv, out, n) == KILLED, f"rename {n}"
        # a kill leaves the lock and the finished-but-unrenamed temporary file behind
        assert (out / "run.lock").is_file()
        assert len([p for p in out.rglob(".*.tmp")]) == 1
        capsys.readouterr()
        assert train.cli(argv) == 0, f"resume after a kill at rename {n}"
        printed = capsys.readouterr().out
        assert "removing the stale lock" in printed and "unfinished temporary file" in printed
        assert_same_outcome(setup["reference"], out)


def test_ctrl_c_at_every_write_then_same_command_resumes_exactly(setup, capsys):
    real_replace = os.replace
    for n in range(1, len(setup["renamed"]) + 1):
        out = setup["root"] / f"ctrlc{n}"
        argv = setup["argv"](out)
        os.replace = _stop_at_rename(out, n, _interrupt)
        try:
            assert train.cli(argv) == 130, f"rename {n}"
        finally:
            os.replace = real_replace
        assert not (out / "run.lock").exists()  # released on the way out
        assert "Interrupted (Ctrl-C)" in capsys.readouterr().err
        assert train.cli(argv) == 0, f"resume after Ctrl-C at rename {n}"
        assert_same_outcome(setup["reference"], out)


def test_stop_mid_epoch_then_same_command_resumes_exactly(setup, capsys):
    real_step = ToyLinearProbe.forward_backward

    def stopping_step(stop_at: int, stop: Callable[[], None]):
        calls = [0]

        def step(self, batch):
            calls[0] += 1
            if calls[0] == stop_at:
                stop()
            return real_step(self, batch)

        return step

    # kill in epoch 2, batch 2 (3 batches per epoch): epoch 1's resume point is on disk
    out = setup["root"] / "kill_mid_epoch"
    argv = setup["argv"](out)

    def body() -> int:
        ToyLinearProbe.forward_backward = stopping_step(5, lambda: os._exit(KILLED))
        return train.cli(argv)

    assert _run_forked(body) == KILLED
    assert (out / "probe" / "model-last.pth.tar").is_file()
    assert train.cli(argv) == 0
    assert "will resume training from model-last.pth.tar" in capsys.readouterr().out
    assert_same_outcome(setup["reference"], out)

    # Ctrl-C in epoch 1, batch 2: nothing saved yet, the same command starts over
    out = setup["root"] / "ctrlc_mid_epoch"
    argv = setup["argv"](out)
    ToyLinearProbe.forward_backward = stopping_step(2, _interrupt)
    try:
        assert train.cli(argv) == 130
    finally:
        ToyLinearProbe.forward_backward = real_step
    assert train.cli(argv) == 0
    assert_same_outcome(setup["reference"], out)
