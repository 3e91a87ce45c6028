"""Non-finite values never become a result: a NaN / inf loss or weight stops the run with one Error line
naming the epoch, step and tensor; nothing of that epoch is evaluated or saved; the last good
checkpoint stays resumable. Also the guard's device-side latch (the GPU path) on the CPU."""
from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

import toy_engine  # noqa: F401  (registers ToyFolder and ToyLinearProbe)
from dassl.engine import FiniteGuard
from dassl.utils.torchtools import load_checkpoint
from toy_engine import ToyLinearProbe, make_image_folder, toy_yaml

train = pytest.importorskip("train")

torch.set_num_threads(1)

TOY_YAML = toy_yaml(3)


@pytest.fixture
def toy(tmp_path):
    data = make_image_folder(tmp_path / "data")
    config = tmp_path / "toy.yaml"
    config.write_text(TOY_YAML)

    def argv(out: Path, *opts: str):
        return ["--root", str(data), "--config-file", str(config), "--trainer", "ToyLinearProbe", "--seed", "0",
                "--output-dir", str(out), "DATASET.NAME", "ToyFolder", "USE_CUDA", "False", *opts]

    return argv


def error_line(err: str) -> str:
    """The run's one Error line (progress bars also write to stderr); it must end the output."""
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert "Traceback" not in err and sum(line.startswith("Error:") for line in lines) == 1, err
    assert lines[-1].startswith("Error: "), err
    return lines[-1]


def _all_finite(obj) -> bool:
    if torch.is_tensor(obj):
        return bool(torch.isfinite(obj).all()) if obj.is_floating_point() else True
    if isinstance(obj, dict):
        return all(_all_finite(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return all(_all_finite(v) for v in obj)
    return True


def test_nan_loss_stops_with_one_line_and_keeps_the_last_good_checkpoint(toy, tmp_path, capsys, monkeypatch):
    real_step = ToyLinearProbe.forward_backward
    calls = [0]

    def poisoned_step(self, batch):  # the 5th step (epoch 2, batch 2 of 3) gets a NaN loss
        calls[0] += 1
        if calls[0] == 5:
            image, label, _ = self.parse_batch_train(batch)
            loss = torch.nn.functional.cross_entropy(self.model(image), label) * float("nan")
            self.model_backward_and_update(loss)
            return {"loss": loss}
        return real_step(self, batch)

    out = tmp_path / "out"
    monkeypatch.setattr(ToyLinearProbe, "forward_backward", poisoned_step)
    assert train.cli(toy(out)) == 2
    line = error_line(capsys.readouterr().err)
    assert line.startswith("Error: Training diverged at epoch 2/3, step 2/3: the loss is NaN")
    assert "model-last.pth.tar" in line and "OPTIM.LR" in line

    folder = out / "probe"
    assert sorted(p.name for p in folder.iterdir()) == ["checkpoint", "model-best.pth.tar", "model-last.pth.tar"]
    last = load_checkpoint(str(folder / "model-last.pth.tar"))
    assert last["epoch"] == 1 and _all_finite(last)
    assert _all_finite(load_checkpoint(str(folder / "model-best.pth.tar")))
    assert not (out / "results.json").exists() and not (out / "run.lock").exists()
    assert "Training diverged" in (out / "log.txt").read_text()  # a run that started keeps its log

    monkeypatch.setattr(ToyLinearProbe, "forward_backward", real_step)  # the same command resumes
    assert train.cli(toy(out)) == 0
    assert "will resume training from model-last.pth.tar" in capsys.readouterr().out
    assert (out / "results.json").is_file() and _all_finite(load_checkpoint(str(folder / "model.pth.tar-3")))


def test_huge_learning_rate_ends_with_the_error_line_not_a_traceback(toy, tmp_path, capsys):
    out = tmp_path / "out"
    assert train.cli(toy(out, "OPTIM.LR", "1e30")) == 2
    assert error_line(capsys.readouterr().err).startswith("Error: Training diverged at epoch 1/3, step ")
    assert "Traceback" not in (out / "log.txt").read_text()
    assert not (out / "probe").exists() or not any((out / "probe").iterdir())  # nothing was saved


def test_weights_poisoned_without_a_step_are_caught_before_evaluation(toy, tmp_path, capsys, monkeypatch):
    real_run_epoch = ToyLinearProbe.run_epoch

    def run_epoch(self):  # the weights go bad outside the optimiser step: the epoch-end scan finds them
        real_run_epoch(self)
        with torch.no_grad():
            self.model[1].bias[0] = math.inf

    monkeypatch.setattr(ToyLinearProbe, "run_epoch", run_epoch)
    assert train.cli(toy(tmp_path / "out")) == 2
    captured = capsys.readouterr()
    assert "parameter probe.1.bias holds infinite values" in error_line(captured.err)
    assert "Evaluate on the *val* set" not in captured.out  # never evaluated, never saved
    assert not (tmp_path / "out" / "probe").exists()


def test_device_latch_names_the_first_bad_step_when_read_late():
    guard = FiniteGuard("cpu", poll_every_step=False)  # what a CUDA run does: read only at sync points
    weight = torch.nn.Parameter(torch.ones(3))
    other = torch.nn.Parameter(torch.zeros(2))
    named = [("m.weight", weight), ("m.other", other)]
    for batch in range(6):
        loss = torch.tensor(float("nan") if batch == 4 else 1.0)
        if batch == 2:
            with torch.no_grad():
                other[1] = -math.inf
        guard.note_loss(loss)
        guard.record(named, epoch=1, batch=batch)
    finding = guard.poll()
    # the first bad step and tensor, although the loss went bad later too; max-abs keeps no sign
    assert (finding.epoch, finding.batch, finding.tensor, finding.describe_value()) == (1, 2, "m.other", "inf")

    clean = FiniteGuard("cpu")
    assert clean.after_step(named[:1], epoch=0, batch=0) is None
    clean.note_loss(torch.tensor(float("inf")))
    found = clean.after_step(named[:1], epoch=0, batch=1)
    assert (found.batch, found.tensor, found.describe_value()) == (1, "the loss", "inf")


def test_promptkd_with_an_absurd_learning_rate_ends_with_the_error_line(tmp_path, capsys):
    """The real distillation trainer (tiny CLIPs): the run diverges, and the user reads one line."""
    import trainers_tiny_setup as tiny

    world = tiny.make_world(tmp_path)
    out = tmp_path / "out"
    # On the tiny models OPTIM.LR 1e6 saturates the softmax instead of overflowing; 1e12 overflows.
    opts = ["DATASET.NAME", tiny.DATASET, "DATASET.NUM_SHOTS", "0", "TRAINER.MODAL", "base2novel",
            "INPUT.SIZE", "(32, 32)", "DATALOADER.NUM_WORKERS", "0", "DATALOADER.TRAIN_X.BATCH_SIZE", "4",
            "DATALOADER.TEST.BATCH_SIZE", "8", "OPTIM.MAX_EPOCH", "2", "OPTIM.LR", "1e12",
            "OPTIM.WARMUP_EPOCH", "-1", "USE_CUDA", "False",
            "MODEL.BACKBONE.WEIGHTS", world["weights"][0], "TRAINER.PROMPTKD.TEACHER_WEIGHTS", world["weights"][1],
            "TRAINER.PROMPTKD.TEACHER_ROOT", world["teacher_root"], "TRAINER.PROMPTKD.PROMPT_DEPTH_VISION", "2",
            "TRAINER.PROMPTKD.KD_WEIGHT", "10.0"]
    argv = ["--root", world["root"], "--seed", "1", "--trainer", "PromptKD", "--output-dir", str(out),
            "--config-file", "configs/trainers/PromptKD/vit_b16_c2_ep20_batch8_4+4ctx.yaml", *opts]
    assert train.cli(argv) == 2
    line = error_line(capsys.readouterr().err)
    assert line.startswith("Error: Training diverged at epoch ") and "step " in line
    assert not (out / "results.json").exists()
    for path in (out / "VLPromptLearner").glob("model*"):
        assert _all_finite(load_checkpoint(str(path))), path
