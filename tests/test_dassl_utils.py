"""Registry, logger, JSON, image reading, meters, small helpers, and compute_accuracy."""
import json
import os
import sys

import pytest
import torch

from dassl.metrics import compute_accuracy
from dassl.utils import (
    AverageMeter,
    MetricMeter,
    Registry,
    UserError,
    check_isfile,
    close_logger,
    listdir_nohidden,
    mkdir_if_missing,
    read_image,
    read_json,
    setup_logger,
    write_json,
)


# ---------------------------------------------------------------- registry
def test_registry_decorator_and_direct_registration():
    reg = Registry("THING")

    @reg.register()
    class Alpha:
        pass

    def beta():
        return 1

    assert reg.register(beta) is beta
    assert reg.get("Alpha") is Alpha and reg.get("beta") is beta
    assert reg.registered_names() == ["Alpha", "beta"]


def test_registry_duplicate_is_an_error_unless_forced():
    reg = Registry("THING")

    class Alpha:
        pass

    reg.register(Alpha)
    with pytest.raises(KeyError, match='"Alpha" was already registered in "THING"'):
        reg.register(Alpha)
    reg.register(Alpha, force=True)


def test_registry_unknown_name_lists_sorted_names():
    reg = Registry("TRAINER")
    for name in ["Zeta", "Alpha", "Mid"]:
        reg.register(type(name, (), {}))
    with pytest.raises(KeyError) as info:
        reg.get("Missing")
    assert isinstance(info.value, UserError)
    message = str(info.value)
    assert '"Missing"' in message and '"TRAINER"' in message
    assert message.endswith("Alpha, Mid, Zeta")


# ---------------------------------------------------------------- logger
def test_logger_tees_and_never_overwrites(tmp_path, capsys):
    try:
        first = setup_logger(str(tmp_path))
        print("first run")
        print("a warning line", file=sys.stderr)
        close_logger()
        second = setup_logger(str(tmp_path))
        print("second run")
        sys.stdout.flush()
        close_logger()
    finally:
        close_logger()
    assert first == str(tmp_path / "log.txt")
    assert second != first and os.path.basename(second).startswith("log.txt-")
    first_text = open(first).read()
    assert "first run" in first_text and "a warning line" in first_text
    assert "second run" not in first_text
    second_text = open(second).read()
    assert "second run" in second_text and "already exists" in second_text
    assert "first run" in capsys.readouterr().out  # still on the console


def test_logger_to_explicit_file_skips_progress_redraws(tmp_path):
    target = tmp_path / "sub" / "train.log"
    try:
        assert setup_logger(str(target)) == str(target)
        sys.stderr.write("\r 10%|#    |")
        sys.stderr.write("kept\n")
        print("hello")
    finally:
        close_logger()
    text = target.read_text()
    assert "hello" in text and "kept" in text and "10%" not in text


def test_setup_logger_none_is_a_noop():
    stdout = sys.stdout
    assert setup_logger(None) is None
    assert sys.stdout is stdout


# ---------------------------------------------------------------- files
def test_write_json_is_atomic_and_round_trips(tmp_path):
    target = tmp_path / "deep" / "split.json"
    write_json({"train": [["a.jpg", 0, "cat"]]}, str(target))
    assert read_json(str(target)) == {"train": [["a.jpg", 0, "cat"]]}
    assert target.read_text().startswith('{\n    "train": [')  # indent 4
    # A failing write leaves the previous content and no temporary file.
    with pytest.raises(TypeError):
        write_json({"bad": object()}, str(target))
    assert json.loads(target.read_text()) == {"train": [["a.jpg", 0, "cat"]]}
    assert sorted(os.listdir(target.parent)) == ["split.json"]


def test_read_json_errors_name_the_file(tmp_path):
    with pytest.raises(UserError, match="missing.json"):
        read_json(str(tmp_path / "missing.json"))
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    with pytest.raises(UserError, match="broken.json"):
        read_json(str(broken))


def test_read_image(tmp_path):
    from PIL import Image

    good = tmp_path / "good.png"
    Image.new("L", (4, 3), color=7).save(good)
    img = read_image(str(good))
    assert img.mode == "RGB" and img.size == (4, 3)
    bad = tmp_path / "truncated.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    with pytest.raises(UserError, match="truncated.jpg"):
        read_image(str(bad))
    with pytest.raises(UserError, match="absent.jpg"):
        read_image(str(tmp_path / "absent.jpg"))


def test_listdir_mkdir_check_isfile(tmp_path):
    for name in ["b", ".hidden", "a"]:
        (tmp_path / name).write_text("x")
    assert listdir_nohidden(str(tmp_path), sort=True) == ["a", "b"]
    mkdir_if_missing(str(tmp_path / "x" / "y"))
    mkdir_if_missing(str(tmp_path / "x" / "y"))
    assert (tmp_path / "x" / "y").is_dir()
    assert check_isfile(str(tmp_path / "a"))
    with pytest.warns(UserWarning, match="No file found"):
        assert not check_isfile(str(tmp_path / "nope"))


# ---------------------------------------------------------------- meters
def test_average_meter():
    meter = AverageMeter()
    meter.update(torch.tensor(2.0))
    meter.update(4.0, n=3)
    assert (meter.val, meter.sum, meter.count) == (4.0, 14.0, 4)
    assert meter.avg == pytest.approx(3.5)
    ema = AverageMeter(ema=True)
    ema.update(10.0)
    ema.update(0.0)
    assert ema.avg == pytest.approx(0.9)


def test_metric_meter_format_and_errors():
    meters = MetricMeter()
    meters.update({"loss": torch.tensor(1.5), "acc": 50.0})
    meters.update({"loss": 0.5, "acc": 100.0})
    meters.update(None)
    assert str(meters) == "loss 0.5000 (1.0000) acc 100.0000 (75.0000)"
    with pytest.raises(TypeError, match="must be a dictionary"):
        meters.update([1.0])


# ---------------------------------------------------------------- metrics
def test_compute_accuracy_topk():
    output = torch.tensor([[0.1, 0.7, 0.2], [0.5, 0.3, 0.2], [0.2, 0.3, 0.5], [0.6, 0.3, 0.1]])
    target = torch.tensor([1, 1, 0, 0])
    top1, top2 = compute_accuracy(output, target, topk=(1, 2))
    assert top1.shape == (1,) and top1.item() == pytest.approx(50.0)
    assert top2.item() == pytest.approx(75.0)
    assert compute_accuracy((output, None), target)[0].item() == pytest.approx(50.0)


# ---------------------------------------------------------------- atomic writes: permissions, failures, leftovers
def test_atomic_write_gives_normal_permissions(tmp_path):
    write_json({"a": 1}, str(tmp_path / "results.json"))
    umask = os.umask(0)
    os.umask(umask)
    assert (tmp_path / "results.json").stat().st_mode & 0o777 == 0o666 & ~umask


def test_atomic_write_failures_name_the_file_and_the_fix(tmp_path):
    import errno

    from dassl.utils import OutputWriteError
    from dassl.utils.tools import atomic_write

    def disk_full(tmp):
        raise OSError(errno.ENOSPC, "No space left on device", tmp)

    with pytest.raises(OutputWriteError) as info:
        atomic_write(str(tmp_path / "model.pth"), disk_full)
    message = str(info.value)
    assert str(tmp_path / "model.pth") in message and "No space left" in message and "is full" in message
    assert isinstance(info.value, UserError) and isinstance(info.value, OSError)

    def torch_writer_failure(tmp):
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598")

    with pytest.raises(OutputWriteError, match=r"model\.pth.*free\)"):
        atomic_write(str(tmp_path / "model.pth"), torch_writer_failure)

    def bug(tmp):
        raise ValueError("a bug, not the disk")

    with pytest.raises(ValueError, match="a bug"):
        atomic_write(str(tmp_path / "model.pth"), bug)
    assert os.listdir(tmp_path) == []  # no temporary file left by any of them


def test_remove_stale_temporary_files_touches_only_interrupted_writes(tmp_path):
    from dassl.utils import remove_stale_temporary_files

    for name in (".model-best.pth.tar.ab12cd34.tmp", ".results.json.k_9x2m0q.tmp", "notes.tmp",
                 ".model.tmp", "model-best.pth.tar"):
        (tmp_path / name).write_text("x")
    removed = remove_stale_temporary_files(str(tmp_path))
    assert removed == [".model-best.pth.tar.ab12cd34.tmp", ".results.json.k_9x2m0q.tmp"]
    assert sorted(os.listdir(tmp_path)) == [".model.tmp", "model-best.pth.tar", "notes.tmp"]
    assert remove_stale_temporary_files(str(tmp_path / "missing")) == []


# ---------------------------------------------------------------- run lock
def test_run_lock_is_exclusive_and_released(tmp_path):
    import socket

    from dassl.utils import FolderInUseError, RunLock

    with RunLock(str(tmp_path / "out")) as lock:
        owner = json.loads((tmp_path / "out" / "run.lock").read_text())
        assert owner["pid"] == os.getpid() and owner["host"] == socket.gethostname()
        with pytest.raises(FolderInUseError, match="already used by a run in this process"):
            RunLock(str(tmp_path / "out")).acquire()
        assert lock.held
    assert not (tmp_path / "out" / "run.lock").exists()
    assert [p for p in os.listdir(tmp_path / "out")] == []  # no temporary file of the lock either

    with pytest.raises(RuntimeError):
        with RunLock(str(tmp_path / "out")):
            raise RuntimeError("the run failed")
    assert not (tmp_path / "out" / "run.lock").exists()


def test_run_lock_takes_over_only_locks_known_to_be_stale(tmp_path, capsys):
    import socket

    from dassl.utils import FolderInUseError, RunLock

    lock_file = tmp_path / "run.lock"
    lock_file.write_text(json.dumps({"pid": os.getpid(), "host": socket.gethostname()}))  # a reused pid
    with RunLock(str(tmp_path)):
        assert "stale lock" in capsys.readouterr().out
    lock_file.write_text(json.dumps({"pid": os.getppid(), "host": "elsewhere"}))
    with pytest.raises(FolderInUseError, match="elsewhere"):
        RunLock(str(tmp_path)).acquire()
    lock_file.write_text("{half a")
    with pytest.raises(FolderInUseError, match="no readable owner"):
        RunLock(str(tmp_path)).acquire()
    assert lock_file.read_text() == "{half a"  # never removed by someone who does not own it


# ---------------------------------------------------------------- logger on a failing disk
@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
def test_logger_survives_a_full_disk_with_one_warning():
    import io

    from dassl.utils import Logger

    console = io.StringIO()
    logger = Logger(console, open("/dev/full", "w", buffering=1))
    for i in range(3):
        logger.write(f"line {i}\n")
        logger.flush()
    text = console.getvalue()
    assert text.count("Warning: cannot write the log file") == 1 and "No space left" in text
    assert "line 0\n" in text and "line 2\n" in text  # the console still gets everything


def test_close_logger_can_discard_the_log(tmp_path):
    from dassl.utils import log_path

    path = setup_logger(str(tmp_path))
    assert log_path() == path
    print("a failed start")
    close_logger(discard=True)
    assert not os.path.exists(path) and log_path() is None


# ---------------------------------------------------------------- one-line failures
def test_expected_failure_lines():
    import errno

    from torch._utils import ExceptionWrapper

    from dassl.utils import expected_failure_line, unexpected_failure_line, worker_traceback

    try:
        read_image("/no/such/dir/img.png")
    except UserError:
        wrapped = ExceptionWrapper(where="in DataLoader worker process 0")
    with pytest.raises(UserError) as info:
        wrapped.reraise()  # what the main process receives from a loader worker
    assert "Original Traceback" in str(info.value)
    assert expected_failure_line(info.value) == 'Image file not found: "/no/such/dir/img.png"'
    assert "read_image" in worker_traceback(info.value)

    full = OSError(errno.ENOSPC, "No space left on device", "/out/log.txt")
    assert expected_failure_line(full).startswith('Cannot write "/out/log.txt" (No space left on device)')
    denied = PermissionError(errno.EACCES, "Permission denied", "/out")
    assert '"/out" (Permission denied)' in expected_failure_line(denied)
    assert expected_failure_line(FileNotFoundError(errno.ENOENT, "No such file", "/x")) == \
        'File or folder not found: "/x"'
    assert expected_failure_line(RuntimeError("boom")) is None
    assert unexpected_failure_line(KeyError("k"), "/out/log.txt") == \
        "unexpected KeyError: 'k'; the full traceback is in /out/log.txt"
