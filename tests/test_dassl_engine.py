"""Trainer loop, checkpoints (atomic write, safe loading, legacy files) and exact resume."""
from __future__ import annotations

import os
import pickle
import re

import pytest
import torch
import torch.nn as nn

import toy_engine
from dassl.engine import TRAINER_REGISTRY, Precision, build_trainer
from dassl.utils import UserError, set_random_seed
from dassl.utils.torchtools import (CheckpointNotFoundError, count_num_param, load_checkpoint,
                                    load_pretrained_weights, resume_from_checkpoint, save_checkpoint)
from toy_engine import SimulatedKill, ToyLinearProbe, make_image_folder, model_weights, toy_cfg

torch.set_num_threads(1)

PROGRESS_LINE = re.compile(
    r"^epoch \[\d+/3\] batch \[\d+/3\] time \d+\.\d{3} \(\d+\.\d{3}\) data \d+\.\d{3} \(\d+\.\d{3}\) "
    r"loss \d+\.\d{4} \(\d+\.\d{4}\) acc \d+\.\d{4} \(\d+\.\d{4}\) lr \d\.\d{4}e[-+]\d{2} eta \d+:\d{2}:\d{2}$")


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    return make_image_folder(tmp_path_factory.mktemp("toy_data"))


def run(cfg, stop_after_epoch=None):
    """Seed, build and train like train.py does; return the trainer."""
    set_random_seed(cfg.SEED)
    trainer = build_trainer(cfg)
    ToyLinearProbe.stop_after_epoch = stop_after_epoch
    try:
        trainer.train()
    finally:
        ToyLinearProbe.stop_after_epoch = None
    return trainer


# ----------------------------------------------------------------------------- loop
def test_toy_trainer_trains_evaluates_and_saves(data_root, tmp_path, capsys):
    cfg = toy_cfg(data_root, tmp_path / "out")
    trainer = run(cfg)
    out = capsys.readouterr().out

    progress = [line for line in out.splitlines() if line.startswith("epoch [")]
    assert len(progress) == 3  # one line per epoch: batch 2 of 3 (PRINT_FREQ 2)
    assert all(PROGRESS_LINE.match(line) for line in progress), progress
    assert "lr 1.0000e-05" in progress[0]  # constant warm-up epoch
    assert out.count("Evaluate on the *val* set") == 3
    assert "Deploy the model with the best val performance" in out
    assert "Evaluate on the *test* set" in out
    assert re.search(r"^\* accuracy: \d+\.\d%$", out, re.M)

    folder = tmp_path / "out" / "probe"
    assert sorted(os.listdir(folder)) == ["checkpoint", "model-best.pth.tar", "model.pth.tar-3"]
    assert (folder / "checkpoint").read_text() == "model.pth.tar-3\n"
    final = torch.load(folder / "model.pth.tar-3", weights_only=True)
    assert set(final) >= {"state_dict", "epoch", "optimizer", "scheduler", "val_result"}
    assert final["epoch"] == 3 and final["val_result"] is None
    best = torch.load(folder / "model-best.pth.tar", weights_only=True)
    assert best["val_result"] == trainer.best_result
    assert trainer.start_epoch == 0 and trainer.epoch == 2


def test_last_step_mode_tests_once_and_uses_the_last_model(data_root, tmp_path, capsys):
    cfg = toy_cfg(data_root, tmp_path / "out", **{"TEST.FINAL_MODEL": "last_step"})
    run(cfg)
    out = capsys.readouterr().out
    assert "Evaluate on the *val* set" not in out
    assert out.count("Evaluate on the *test* set") == 1
    assert "Deploy the last-epoch model" in out
    assert not (tmp_path / "out" / "probe" / "model-best.pth.tar").exists()


def test_unknown_trainer_lists_registered_names(data_root, tmp_path):
    cfg = toy_cfg(data_root, tmp_path, **{"TRAINER.NAME": "ToyLinearProbee"})
    with pytest.raises(ValueError, match=r"ToyLinearProbe.*do you mean \[ToyLinearProbe\]"):
        build_trainer(cfg)


def test_bad_final_model_is_a_clear_error(data_root, tmp_path):
    cfg = toy_cfg(data_root, tmp_path, **{"TEST.FINAL_MODEL": "best"})
    with pytest.raises(UserError, match="TEST.FINAL_MODEL"):
        build_trainer(cfg)


def test_data_protocol_is_none_unless_a_trainer_overrides_it(data_root, tmp_path):
    cfg = toy_cfg(data_root, tmp_path, **{"TRAINER.MODAL": "cross"})
    build_trainer(cfg)
    assert toy_engine.ToyFolder.last_protocol is None

    @TRAINER_REGISTRY.register(force=True)
    class ToyDistiller(ToyLinearProbe):
        def data_protocol(self):
            return self.cfg.TRAINER.MODAL

    cfg = toy_cfg(data_root, tmp_path, **{"TRAINER.MODAL": "cross", "TRAINER.NAME": "ToyDistiller"})
    trainer = build_trainer(cfg)
    assert trainer.data_protocol() == "cross"
    assert toy_engine.ToyFolder.last_protocol == "cross"


def test_precision_falls_back_to_fp32_on_cpu(capsys):
    precision = Precision("fp16", "cpu")
    assert precision.mode == "fp32" and precision.scaler is None
    assert "fp16 was requested" in capsys.readouterr().out
    with pytest.raises(ValueError, match="fp8"):
        Precision("fp8", "cpu")


# ----------------------------------------------------------------------------- checkpoints
def test_checkpoint_write_is_atomic(tmp_path, monkeypatch):
    model = nn.Linear(2, 2)
    save_checkpoint({"state_dict": model.state_dict(), "epoch": 1}, str(tmp_path), model_name="m.pth")
    before = torch.load(tmp_path / "m.pth", weights_only=True)

    def crash_mid_write(obj, path, *args, **kwargs):
        with open(path, "wb") as f:
            f.write(b"PK\x03\x04 half a file")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", crash_mid_write)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint({"state_dict": nn.Linear(2, 2).state_dict(), "epoch": 2}, str(tmp_path),
                        model_name="m.pth")
    monkeypatch.undo()

    after = load_checkpoint(str(tmp_path / "m.pth"))
    assert after["epoch"] == 1
    assert all(torch.equal(after["state_dict"][k], before["state_dict"][k]) for k in before["state_dict"])
    assert sorted(os.listdir(tmp_path)) == ["checkpoint", "m.pth"]  # no temporary file left
    assert (tmp_path / "checkpoint").read_text() == "m.pth\n"


def test_save_checkpoint_strips_module_prefix_and_writes_best(tmp_path):
    wrapped = nn.DataParallel(nn.Linear(2, 3))
    state = {"state_dict": wrapped.state_dict(), "epoch": 4, "optimizer": None, "scheduler": None,
             "val_result": 50.0}
    save_checkpoint(state, str(tmp_path), is_best=True)
    saved = torch.load(tmp_path / "model.pth.tar-4", weights_only=True)
    assert set(saved["state_dict"]) == {"weight", "bias"}
    assert (tmp_path / "model-best.pth.tar").is_file()


def _legacy_checkpoint(path):
    """Write a checkpoint shaped like the original Dassl/PromptSRC ones (pickled torch objects)."""
    model = nn.Linear(3, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    successor = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=20.0)
    model(torch.randn(4, 3)).sum().backward()
    optimizer.step()
    successor.step()
    scheduler_state = {"successor": successor, "warmup_epoch": 1, "cons_lr": 1e-5, "last_epoch": 2,
                       "base_lrs": [0.1], "_step_count": 3}
    torch.save({"state_dict": model.state_dict(), "epoch": 2, "optimizer": optimizer.state_dict(),
                "scheduler": scheduler_state, "val_result": 71.5}, path)
    return model


def test_legacy_checkpoint_loads_without_unsafe_unpickling(tmp_path):
    path = tmp_path / "model-best.pth.tar"
    model = _legacy_checkpoint(path)
    with pytest.raises(pickle.UnpicklingError):
        torch.load(path, weights_only=True)  # what upstream Dassl hits on PyTorch >= 2.6

    checkpoint = load_checkpoint(str(path))
    assert checkpoint["epoch"] == 2 and checkpoint["val_result"] == 71.5
    assert torch.equal(checkpoint["state_dict"]["weight"], model.weight.detach())
    successor = checkpoint["scheduler"]["successor"]
    assert type(successor) is dict and successor["T_max"] == 20.0
    assert type(successor["optimizer"]) is dict and type(successor["optimizer"]["state"]) is dict

    fresh = nn.Linear(3, 2)
    load_pretrained_weights(fresh, str(path))
    assert torch.equal(fresh.weight, model.weight)


class _Exploit:
    def __init__(self, target):
        self.target = target

    def __reduce__(self):
        return (os.mkdir, (self.target,))


def test_load_checkpoint_never_runs_pickled_code(tmp_path):
    target = tmp_path / "pwned"
    torch.save({"state_dict": {}, "payload": _Exploit(str(target))}, tmp_path / "evil.pth")
    with pytest.raises(UserError, match="evil.pth"):
        load_checkpoint(str(tmp_path / "evil.pth"))
    assert not target.exists()


def test_missing_checkpoint_names_the_path(tmp_path):
    with pytest.raises(CheckpointNotFoundError, match="nowhere.pth"):
        load_checkpoint(str(tmp_path / "nowhere.pth"))
    with pytest.raises(CheckpointNotFoundError, match="checkpoint"):
        resume_from_checkpoint(str(tmp_path), nn.Linear(1, 1))


def test_count_num_param():
    model = nn.Linear(3, 2)
    assert count_num_param(model) == 8
    assert count_num_param(params=[{"params": [model.weight]}, model.bias]) == 8
    with pytest.raises(ValueError):
        count_num_param()


# ----------------------------------------------------------------------------- resume
def test_interrupted_and_resumed_run_equals_uninterrupted(data_root, tmp_path, capsys):
    reference = run(toy_cfg(data_root, tmp_path / "full"))
    expected = model_weights(reference)

    cfg = toy_cfg(data_root, tmp_path / "resumed")
    with pytest.raises(SimulatedKill):
        run(cfg, stop_after_epoch=1)
    resume_file = tmp_path / "resumed" / "probe" / "model-last.pth.tar"
    saved = torch.load(resume_file, weights_only=True)  # plain data, RNG states included
    assert saved["epoch"] == 1 and set(saved["rng_state"]) == {"torch", "cuda", "python", "numpy"}
    capsys.readouterr()

    resumed = run(cfg)
    out = capsys.readouterr().out
    assert "Found checkpoint at" in out and "model-last.pth.tar" in out
    assert resumed.start_epoch == 1
    assert out.count("Evaluate on the *val* set") == 2  # epochs 2 and 3 only
    got = model_weights(resumed)
    assert all(torch.equal(got[k], expected[k]) for k in expected)
    assert resumed.best_result == reference.best_result
    assert not resume_file.exists()  # superseded by model.pth.tar-3 at the end


def test_resume_flag_requires_a_checkpoint(data_root, tmp_path):
    cfg = toy_cfg(data_root, tmp_path / "out", RESUME=str(tmp_path / "empty"))
    with pytest.raises(CheckpointNotFoundError, match="empty"):
        run(cfg)


def test_rerun_into_finished_folder_only_retests(data_root, tmp_path, capsys):
    cfg = toy_cfg(data_root, tmp_path / "out")
    first = model_weights(run(cfg))
    capsys.readouterr()
    second = run(cfg)
    out = capsys.readouterr().out
    assert "Found checkpoint at" in out and "model.pth.tar-3" in out
    assert "epoch [" not in out and "Finish training" in out
    assert second.start_epoch == 3
    assert all(torch.equal(model_weights(second)[k], first[k]) for k in first)


def test_every_checkpoint_holds_the_full_resume_state(data_root, tmp_path):
    cfg = toy_cfg(data_root, tmp_path / "out")
    trainer = run(cfg)
    for name in ("model-best.pth.tar", "model.pth.tar-3"):
        saved = torch.load(tmp_path / "out" / "probe" / name, weights_only=True)
        assert {"rng_state", "best_result", "precision", "run_state", "config_hash", "config_items"} <= set(saved)
        assert saved["run_state"]["val_by_epoch"]  # the trainer's run_state hook
    final = torch.load(tmp_path / "out" / "probe" / "model.pth.tar-3", weights_only=True)
    assert final["best_result"] == trainer.best_result


def test_stop_after_the_first_best_checkpoint_resumes_from_it_exactly(data_root, tmp_path, capsys):
    """The stop the resume file alone could not cover: epoch 1's model-best and pointer are written, its
    model-last is not. Resuming from model-best must restore random states, best result and run state."""
    reference = run(toy_cfg(data_root, tmp_path / "full"))
    cfg = toy_cfg(data_root, tmp_path / "stopped")
    with pytest.raises(SimulatedKill):
        run(cfg, stop_after_epoch=1)
    os.remove(tmp_path / "stopped" / "probe" / "model-last.pth.tar")
    assert (tmp_path / "stopped" / "probe" / "checkpoint").read_text() == "model-best.pth.tar\n"
    capsys.readouterr()

    resumed = run(cfg)
    out = capsys.readouterr().out
    assert "will resume training from model-best.pth.tar" in out and "Restored random-number states" in out
    assert all(torch.equal(model_weights(resumed)[k], v) for k, v in model_weights(reference).items())
    assert resumed.best_result == reference.best_result and resumed.val_by_epoch == reference.val_by_epoch
