"""What the user sees when things go wrong, through train.py on the toy trainer: a refused resume of
another configuration, a busy or stale output folder, a checkpoint of another shape, an unwritable or
full output folder, a failing log file, an image that does not decode in a loader worker, an
unexpected exception, and the small honesty checks (MAX_EPOCH, failed-start logs, --eval-only notes)."""
from __future__ import annotations

import builtins
import errno
import gc
import json
import os
import socket
import subprocess
from pathlib import Path

import pytest
import torch

import toy_engine  # noqa: F401  (registers ToyFolder and ToyLinearProbe)
from dassl.utils.torchtools import load_checkpoint
from toy_engine import ToyLinearProbe, make_image_folder, toy_yaml

train = pytest.importorskip("train")

torch.set_num_threads(1)

TOY_YAML = toy_yaml(2)


@pytest.fixture
def toy(tmp_path):
    """``toy(out, *opts)`` -> argv of a toy run into `out`; ``toy.data`` is the image folder."""
    data = make_image_folder(tmp_path / "data")
    config = tmp_path / "toy.yaml"
    config.write_text(TOY_YAML)

    def argv(out: Path, *extra: str):
        flags = [e for e in extra if e.startswith("--")]
        opts = [e for e in extra if not e.startswith("--")]
        values = []
        for flag in flags:  # flags with a value are given as "--flag=value"
            values.extend(flag.split("=", 1))
        return ["--root", str(data), "--config-file", str(config), "--trainer", "ToyLinearProbe", "--seed", "0",
                "--output-dir", str(out), *values, "DATASET.NAME", "ToyFolder", "USE_CUDA", "False", *opts]

    argv.data = data
    yield argv
    ToyLinearProbe.stop_after_epoch = None


def error_line(err: str) -> str:
    """The run's one Error line (progress bars also write to stderr); it must end the output."""
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert "Traceback" not in err and sum(line.startswith("Error:") for line in lines) == 1, err
    assert lines[-1].startswith("Error: "), err
    return lines[-1]


def logs(out: Path):
    return sorted(p.name for p in out.glob("log.txt*"))


def _killed_after_epoch_1(toy, out: Path) -> None:
    ToyLinearProbe.stop_after_epoch = 1
    with pytest.raises(toy_engine.SimulatedKill):
        train.main(train.build_parser().parse_args(toy(out)))
    ToyLinearProbe.stop_after_epoch = None
    from dassl.utils import close_logger

    close_logger()


# ----------------------------------------------------------------------------- configuration identity
def test_resume_of_another_configuration_is_refused_naming_the_keys(toy, tmp_path, capsys):
    out = tmp_path / "out"
    _killed_after_epoch_1(toy, out)
    stored = load_checkpoint(str(out / "probe" / "model-last.pth.tar"))
    assert len(stored["config_hash"]) == 12 and stored["config_items"]["OPTIM.LR"] == "0.05"
    assert "SEED" not in stored["config_items"] and "OUTPUT_DIR" not in stored["config_items"]
    capsys.readouterr()

    assert train.cli(toy(out, "OPTIM.LR", "0.5", "OPTIM.MOMENTUM", "0.5")) == 2
    line = error_line(capsys.readouterr().err)
    assert "model-last.pth.tar" in line and "another configuration" in line
    assert "OPTIM.LR (checkpoint 0.05, now 0.5)" in line and "OPTIM.MOMENTUM (checkpoint 0.9, now 0.5)" in line
    assert "--output-dir" in line and "RUN_TAG" in line and "delete" in line
    assert logs(out) == ["log.txt"]  # the refused start removed its own log
    assert load_checkpoint(str(out / "probe" / "model-last.pth.tar"))["epoch"] == 1  # untouched

    assert train.cli(toy(out, "--seed=5")) == 0  # another seed is the same configuration: resumes
    assert "will resume training from model-last.pth.tar" in capsys.readouterr().out


def test_resume_flag_with_another_configuration_is_refused(toy, tmp_path, capsys):
    _killed_after_epoch_1(toy, tmp_path / "old")
    capsys.readouterr()
    argv = toy(tmp_path / "new", f"--resume={tmp_path / 'old'}", "OPTIM.MAX_EPOCH", "4")
    assert train.cli(argv) == 2
    line = error_line(capsys.readouterr().err)
    assert "OPTIM.MAX_EPOCH (checkpoint 2, now 4)" in line and "--resume" in line


def test_checkpoint_without_identity_resumes_with_a_note(toy, tmp_path, capsys):
    out = tmp_path / "out"
    _killed_after_epoch_1(toy, out)
    path = out / "probe" / "model-last.pth.tar"
    old_style = {k: v for k, v in load_checkpoint(str(path)).items() if not k.startswith("config_")}
    torch.save(old_style, path)
    capsys.readouterr()
    assert train.cli(toy(out, "OPTIM.LR", "0.5")) == 0
    assert "records no configuration" in capsys.readouterr().out


def test_eval_only_of_another_configuration_is_a_note(toy, tmp_path, capsys):
    assert train.cli(toy(tmp_path / "trained")) == 0
    capsys.readouterr()
    argv = toy(tmp_path / "eval", "--eval-only", f"--model-dir={tmp_path / 'trained'}", "OPTIM.LR", "0.01")
    assert train.cli(argv) == 0
    assert "was trained with another configuration (differs in OPTIM.LR (checkpoint 0.05, now 0.01))" in \
        capsys.readouterr().out


# ----------------------------------------------------------------------------- one run per folder
def test_second_run_into_a_busy_folder_stops_at_once(toy, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "run.lock").write_text(json.dumps({"pid": os.getppid(), "host": socket.gethostname(),
                                              "started": "2024-01-01 00:00:00"}))
    assert train.cli(toy(out)) == 2
    line = error_line(capsys.readouterr().err)
    assert f"pid {os.getppid()}" in line and "in use" in line and str(out / "run.lock") in line
    assert logs(out) == [] and not (out / "probe").exists()

    (out / "run.lock").write_text(json.dumps({"pid": 1, "host": "another-host", "started": "?"}))
    assert train.cli(toy(out)) == 2
    assert "another-host" in error_line(capsys.readouterr().err)


def test_stale_lock_of_a_dead_run_is_taken_over(toy, tmp_path, capsys):
    finished = subprocess.Popen(["true"])
    finished.wait()
    out = tmp_path / "out"
    out.mkdir()
    (out / "run.lock").write_text(json.dumps({"pid": finished.pid, "host": socket.gethostname()}))
    assert train.cli(toy(out)) == 0
    assert "removing the stale lock" in capsys.readouterr().out
    assert not (out / "run.lock").exists()


# ----------------------------------------------------------------------------- checkpoints of another shape
def test_checkpoint_of_another_shape_is_one_line(toy, tmp_path, capsys):
    assert train.cli(toy(tmp_path / "trained")) == 0
    capsys.readouterr()
    argv = toy(tmp_path / "eval", "--eval-only", f"--model-dir={tmp_path / 'trained'}", "INPUT.SIZE", "(6, 6)")
    assert train.cli(argv) == 2
    line = error_line(capsys.readouterr().err)
    assert "model-best.pth.tar" in line and "1.weight has shape (3, 192) in the checkpoint and (3, 108)" in line
    assert "INPUT.SIZE (checkpoint (8, 8), now (6, 6))" in line
    assert logs(tmp_path / "eval") == []  # a failed start leaves no log behind


def test_resume_from_a_checkpoint_of_another_shape_is_one_line(toy, tmp_path, capsys):
    out = tmp_path / "out"
    _killed_after_epoch_1(toy, out)
    path = out / "probe" / "model-last.pth.tar"
    old_style = {k: v for k, v in load_checkpoint(str(path)).items() if not k.startswith("config_")}
    old_style["state_dict"]["1.weight"] = torch.zeros(3, 10)
    torch.save(old_style, path)
    capsys.readouterr()
    assert train.cli(toy(out)) == 2
    line = error_line(capsys.readouterr().err)
    assert str(path) in line and "1.weight has shape (3, 10)" in line and "other settings" in line


# ----------------------------------------------------------------------------- output folder and log file
def test_output_folder_under_a_file_is_one_line(toy, tmp_path, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    assert train.cli(toy(blocker / "out")) == 2
    line = error_line(capsys.readouterr().err)
    assert str(blocker) in line


def test_read_only_output_folder_is_one_line(toy, tmp_path, capsys, monkeypatch):
    out = tmp_path / "out"
    out.mkdir()
    real_open, real_os_open = builtins.open, os.open

    def refuse(path):
        if str(path).startswith(str(out)):
            raise PermissionError(errno.EROFS, "Read-only file system", str(path))

    def guarded_open(path, *args, **kwargs):
        if isinstance(path, (str, Path)) and args and "w" in args[0]:
            refuse(path)
        return real_open(path, *args, **kwargs)

    def guarded_os_open(path, flags, *args, **kwargs):
        if flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT):
            refuse(path)
        return real_os_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", guarded_open)
    monkeypatch.setattr(os, "open", guarded_os_open)
    assert train.cli(toy(out)) == 2
    line = error_line(capsys.readouterr().err)
    assert str(out) in line and "Read-only file system" in line and "--output-dir" in line


def test_full_disk_names_the_checkpoint_even_when_the_log_fails_too(toy, tmp_path, capsys, monkeypatch):
    import dassl.utils.logger as logger_module

    out = tmp_path / "out"
    full = builtins.open("/dev/full", "w", buffering=1) if os.path.exists("/dev/full") else None
    if full is None:
        pytest.skip("needs /dev/full")
    full.close()
    monkeypatch.setattr(logger_module, "open", lambda *a, **k: builtins.open("/dev/full", "w", buffering=1),
                        raising=False)
    real_save = torch.save

    def disk_full_save(obj, path, *args, **kwargs):
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598")

    monkeypatch.setattr(torch, "save", disk_full_save)
    assert train.cli(toy(out)) == 2
    err = capsys.readouterr().err
    assert "Warning: cannot write the log file" in err and err.count("Warning: cannot write the log file") == 1
    line = error_line(err)
    assert "Cannot write" in line and "model-best.pth.tar" in line and "free" in line
    monkeypatch.setattr(torch, "save", real_save)
    assert not any(p.name.endswith(".tmp") for p in (out / "probe").iterdir())


# ----------------------------------------------------------------------------- data and unexpected failures
def test_undecodable_image_in_a_loader_worker_is_one_line(toy, tmp_path, capsys):
    bad = toy.data / "train" / "red" / "1.png"
    bad.write_bytes(b"not a png at all")
    out = tmp_path / "out"
    assert train.cli(toy(out, "DATALOADER.NUM_WORKERS", "1")) == 2
    line = error_line(capsys.readouterr().err)
    assert line.startswith(f'Error: Cannot decode image "{bad}"')
    assert "Original Traceback" in (out / "log.txt").read_text()  # the worker's traceback is in the log
    gc.collect()  # shut the failed loader's worker down here (PyTorch waits up to 5 s for it)


def test_unexpected_exception_keeps_the_traceback_in_the_log(toy, tmp_path, capsys, monkeypatch):
    def broken_step(self, batch):
        raise ZeroDivisionError("a bug in a trainer")

    monkeypatch.setattr(ToyLinearProbe, "forward_backward", broken_step)
    out = tmp_path / "out"
    assert train.cli(toy(out)) == 1
    line = error_line(capsys.readouterr().err)
    log_file = out / "log.txt"
    assert line == f"Error: unexpected ZeroDivisionError: a bug in a trainer; the full traceback is in {log_file}"
    log = (out / "log.txt").read_text()
    assert "Traceback (most recent call last)" in log and "broken_step" in log


# ----------------------------------------------------------------------------- small honesty checks
def test_max_epoch_zero_is_rejected_up_front(toy, tmp_path, capsys):
    out = tmp_path / "out"
    assert train.cli(toy(out, "OPTIM.MAX_EPOCH", "0")) == 2
    assert "OPTIM.MAX_EPOCH must be at least 1" in error_line(capsys.readouterr().err)
    assert not out.exists()


def test_failed_start_leaves_no_log_that_pushes_the_next_one(toy, tmp_path, capsys):
    out = tmp_path / "out"
    assert train.cli(toy(out, "TEST.FINAL_MODEL", "best")) == 2
    assert "TEST.FINAL_MODEL" in error_line(capsys.readouterr().err)
    assert logs(out) == []
    assert train.cli(toy(out)) == 0
    assert logs(out) == ["log.txt"]


def test_eval_only_without_model_dir_says_it_evaluates_initial_weights(toy, tmp_path, capsys):
    assert train.cli(toy(tmp_path / "out", "--eval-only")) == 0
    out = capsys.readouterr().out
    assert "evaluates the initial, untrained weights of ToyLinearProbe" in out and "--model-dir" in out
