"""Several processes (torchrun's environment, gloo on the CPU, 2 processes forked by ddp_launch) on the toy
engine trainer through train.py: a run trains what one process trains at the same global batch, a stopped
run resumes, evaluation is split and gathered exactly, and every process stops on a NaN or a refused start.

Tolerance of the weight comparisons: float32, rtol 1e-5 / atol 1e-6. The two runs compute the same sums
in a different order (each process sums its half of the batch, then the all-reduce adds the halves),
which changes the last bits of every step's gradient; a few SGD steps keep those differences near
float32 resolution (~1e-7 relative), far below any change of the data or the update rule.
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import toy_engine  # noqa: F401  (registers ToyFolder and ToyLinearProbe)
from dassl.engine import TRAINER_REGISTRY
from dassl.engine.distributed import (CrossProcessBatchNorm, average_gradients, convert_batchnorm,
                                      gather_with_grad)
from dassl.optim import build_lr_scheduler, build_optimizer
from dassl.utils import process_rank
from dassl.utils.torchtools import load_checkpoint
from ddp_launch import cli, result_lines, run_processes
from toy_engine import ToyLinearProbe, make_image_folder

pytest.importorskip("train")

torch.set_num_threads(1)

RTOL, ATOL = 1e-5, 1e-6

TOY_YAML = """\
INPUT:
  SIZE: (8, 8)
  INTERPOLATION: "bicubic"
  TRANSFORMS: ["random_resized_crop", "random_flip", "normalize"]
  RRCROP_SCALE: (0.3, 1.0)
DATALOADER:
  NUM_WORKERS: 0
  TRAIN_X:
    BATCH_SIZE: 4
  TEST:
    BATCH_SIZE: 2
OPTIM:
  NAME: "sgd"
  LR: 0.05
  MAX_EPOCH: 2
TRAIN:
  PRINT_FREQ: 2
TEST:
  FINAL_MODEL: "best_val"
"""


@TRAINER_REGISTRY.register(force=True)
class ToyBatchNormProbe(ToyLinearProbe):
    """The toy probe with a hidden layer and BatchNorm, so that the batch statistics matter."""

    nan_at = None  # (rank, epoch, batch): make that process's loss NaN there

    def build_model(self):
        self.val_by_epoch = {}
        self.final_test = None
        height, width = self.cfg.INPUT.SIZE
        self.model = nn.Sequential(nn.Flatten(), nn.Linear(3 * height * width, 6), nn.BatchNorm1d(6), nn.ReLU(),
                                   nn.Linear(6, self.num_classes))
        self.model.to(self.device)
        self.optim = build_optimizer(self.model, self.cfg.OPTIM)
        self.sched = build_lr_scheduler(self.optim, self.cfg.OPTIM)
        self.register_model("probe", self.model, self.optim, self.sched)

    def forward_backward(self, batch):
        if self.nan_at == (process_rank(), self.epoch, self.batch_idx):
            image, label, _ = self.parse_batch_train(batch)
            loss = F.cross_entropy(self.model(image), label) * math.nan
            self.model_backward_and_update(loss)
            return {"loss": loss}
        return super().forward_backward(batch)


def toy_argv(data: Path, config: Path, out: Path, *opts: str, flags=()):
    return ["--root", str(data), "--config-file", str(config), "--trainer", "ToyBatchNormProbe", "--seed", "0",
            "--output-dir", str(out), *flags, "DATASET.NAME", "ToyFolder", "USE_CUDA", "False", *opts]


def weights(out: Path, name: str = "model.pth.tar-2") -> dict:
    return load_checkpoint(str(out / "probe" / name))


def assert_same_weights(first: dict, second: dict) -> None:
    assert first.keys() == second.keys()
    for key in first:
        if first[key].is_floating_point():
            torch.testing.assert_close(first[key], second[key], rtol=RTOL, atol=ATOL, msg=key)
        else:
            assert torch.equal(first[key], second[key]), key


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    """Data (12 train / 9 test images), the config, and one single-process reference run."""
    root = tmp_path_factory.mktemp("ddp_toy")
    data = make_image_folder(root / "data", per_class_train=4, per_class_test=3)
    config = root / "toy.yaml"
    config.write_text(TOY_YAML)
    reference = root / "single"
    status, err = cli(toy_argv(data, config, reference, "DATALOADER.SEEDED_AUGMENTATION", "True"))
    assert status == 0, err
    return {"data": data, "config": config, "root": root, "reference": reference}


@pytest.fixture(autouse=True)
def reset_toy_switches():
    yield
    ToyBatchNormProbe.stop_after_epoch = None
    ToyBatchNormProbe.nan_at = None


def test_two_processes_train_what_one_process_trains(toy):
    out = toy["root"] / "two"
    statuses = run_processes(cli, 2, (toy_argv(toy["data"], toy["config"], out),))
    assert [status for status, _ in statuses] == [0, 0], statuses
    two, one = weights(out), weights(toy["reference"])
    assert_same_weights(two["state_dict"], one["state_dict"])
    assert two["state_dict"]["2.num_batches_tracked"] == 6  # 2 epochs x 3 global batches of 4
    # unset SEEDED_AUGMENTATION became True under 2 processes: the same configuration as the reference
    assert two["config_hash"] == one["config_hash"]
    assert json.loads((out / "results.json").read_text()) == json.loads((toy["reference"] / "results.json").read_text())
    log = (out / "log.txt").read_text()
    assert "world size: 2" in log and "1 BatchNorm layer(s) normalise with the statistics of the global batch" in log
    assert sorted(p.name for p in out.glob("log.txt*")) == ["log.txt"]  # rank 1 logs nothing
    assert not (out / "run.lock").exists()
    assert not list(out.rglob("*.tmp"))
    # one process, default data stream: another configuration than the folder's, refused with the key named
    status, err = cli(toy_argv(toy["data"], toy["config"], out, "OPTIM.MAX_EPOCH", "3"))
    assert status == 2 and "differs in DATALOADER.SEEDED_AUGMENTATION (checkpoint True, now None)" in err, err


def test_a_stopped_two_process_run_resumes_to_the_same_result(toy):
    out = toy["root"] / "stopped"
    argv = toy_argv(toy["data"], toy["config"], out)
    ToyBatchNormProbe.stop_after_epoch = 1
    stopped = run_processes(cli, 2, (argv,))
    assert [status for status, _ in stopped] == [1, 1]
    assert (out / "probe" / "model-last.pth.tar").is_file() and not (out / "results.json").exists()
    ToyBatchNormProbe.stop_after_epoch = None
    resumed = run_processes(cli, 2, (argv,))
    assert [status for status, _ in resumed] == [0, 0], resumed
    assert_same_weights(weights(out)["state_dict"], weights(toy["reference"])["state_dict"])
    assert json.loads((out / "results.json").read_text()) == json.loads((toy["reference"] / "results.json").read_text())
    second_log = max(out.glob("log.txt-*"), key=os.path.getmtime).read_text()
    assert "will resume training from model-last.pth.tar" in second_log


def test_evaluation_is_split_and_gathered_exactly(toy):
    flags = ("--eval-only", "--model-dir", str(toy["reference"]))
    single, two = toy["root"] / "eval1", toy["root"] / "eval2"
    status, err = cli(toy_argv(toy["data"], toy["config"], single, "TEST.PER_CLASS_RESULT", "True", flags=flags))
    assert status == 0, err
    statuses = run_processes(cli, 2, (toy_argv(toy["data"], toy["config"], two, "TEST.PER_CLASS_RESULT", "True",
                                               flags=flags),))
    assert [status for status, _ in statuses] == [0, 0], statuses
    lines = result_lines(single / "log.txt")
    assert "* total: 9" in lines  # 9 test images: shards of 4 and 5, each image counted once
    assert result_lines(two / "log.txt") == lines


def test_a_nan_on_one_process_stops_every_process_with_one_message(toy):
    out = toy["root"] / "nan"
    ToyBatchNormProbe.nan_at = (1, 1, 1)  # rank 1, epoch 2, step 2
    results = run_processes(cli, 2, (toy_argv(toy["data"], toy["config"], out),))
    assert [status for status, _ in results] == [2, 2], results
    rank0 = [line for line in results[0][1].splitlines() if line.startswith("Error:")]
    rank1 = [line for line in results[1][1].splitlines() if "Error:" in line]
    assert len(rank0) == 1 and rank0[0].startswith("Error: Training diverged at epoch 2/2, step 2/3: the loss is NaN")
    assert rank1 == ["[rank 1] " + rank0[0]]
    assert not (out / "results.json").exists()
    last = weights(out, "model-last.pth.tar")
    assert last["epoch"] == 1 and all(torch.isfinite(v).all() for v in last["state_dict"].values())


def test_refused_starts_stop_every_process(toy):
    results = run_processes(cli, 2, (toy_argv(toy["data"], toy["config"], toy["root"] / "odd",
                                              "DATALOADER.TRAIN_X.BATCH_SIZE", "5"),))
    assert [status for status, _ in results] == [2, 2]
    expected = "Error: DATALOADER.TRAIN_X.BATCH_SIZE 5 is the global batch and must divide by the 2 processes"
    assert expected in results[0][1] and f"[rank 1] {expected}" in results[1][1]

    busy = toy["root"] / "busy"
    busy.mkdir()
    lock = {"pid": os.getpid(), "host": os.uname().nodename, "started": "now"}
    (busy / "run.lock").write_text(json.dumps(lock))  # held by this (live) test process
    results = run_processes(cli, 2, (toy_argv(toy["data"], toy["config"], busy),))
    assert [status for status, _ in results] == [2, 2]
    assert f'Error: Output folder "{busy}" is in use by another run' in results[0][1]
    assert f'[rank 1] Error: rank 0 stopped the run: Output folder "{busy}" is in use' in results[1][1]
    assert json.loads((busy / "run.lock").read_text()) == lock


# ----------------------------------------------------------------------------- engine pieces
def _batch_coupled_step(x: torch.Tensor, model: nn.Module, head: nn.Module, gather) -> None:
    """A mean loss plus an entropy over the rows of the whole batch (as RSM's H(M)), then backward."""
    features = model(x)
    rows = gather(head(features))
    p = F.softmax(rows.mean(dim=1), dim=0)
    entropy = -(p * p.log()).sum()
    (features.pow(2).mean() + entropy).backward()


def _models():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 4), nn.BatchNorm1d(4), nn.ReLU())
    head = nn.Linear(4, 3)
    return model, head


def _two_process_gradients(x: torch.Tensor):
    model, head = _models()
    model, converted = convert_batchnorm(model)
    assert converted == 1 and isinstance(model[1], CrossProcessBatchNorm)
    torch.distributed.init_process_group("gloo")
    try:
        rank = torch.distributed.get_rank()
        _batch_coupled_step(x.chunk(2)[rank], model, head, gather_with_grad)
        params = list(model.parameters()) + list(head.parameters())
        average_gradients(params)
        # numpy arrays: tensors would cross the result queue through shared memory of an exited process
        return [p.grad.numpy().copy() for p in params], [model[1].running_mean.numpy().copy(),
                                                          model[1].running_var.numpy().copy()]
    finally:
        torch.distributed.destroy_process_group()


def test_batchnorm_and_gathered_rows_give_the_gradient_of_the_whole_batch():
    x = torch.randn(8, 5, generator=torch.Generator().manual_seed(1)) * 3 + 1
    model, head = _models()
    _batch_coupled_step(x, model, head, lambda rows: rows)
    expected = [p.grad for p in list(model.parameters()) + list(head.parameters())]
    stats = [model[1].running_mean, model[1].running_var]
    for grads, running in run_processes(_two_process_gradients, 2, (x,)):
        for got, want in zip(grads + running, expected + stats):
            torch.testing.assert_close(torch.from_numpy(got), want, rtol=RTOL, atol=ATOL)
