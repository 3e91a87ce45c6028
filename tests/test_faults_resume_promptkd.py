"""Fault injection on a real distillation trainer: a tiny PromptKD_RSM run stopped with Ctrl-C at every
file write of its run (config, best-on-base checkpoint, pointer, resume file, final checkpoint, results)
and started again with the same command ends like an uninterrupted run: the same checkpoints, the same evaluation record, the same
results.json. The toy-engine matrix (tests/test_faults_resume.py) covers every write and kill -9; this test
checks what only a distillation trainer has (its run record, the best-on-base entry, the RSM projections).
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

import trainers_tiny_setup as tiny
from dassl.utils.torchtools import load_checkpoint

train = pytest.importorskip("train")

PROMPTKD_YAML = os.path.join("configs", "trainers", "PromptKD", "vit_b16_c2_ep20_batch8_4+4ctx.yaml")
FOLDER = "VLPromptLearner"


def _argv(world, out: Path):
    student, teacher = world["weights"]
    return ["--root", world["root"], "--seed", "1", "--trainer", "PromptKD_RSM", "--config-file", PROMPTKD_YAML,
            "--output-dir", str(out), "DATASET.NAME", tiny.DATASET, "DATASET.NUM_SHOTS", "0",
            "TRAINER.MODAL", "base2novel", "INPUT.SIZE", "(32, 32)", "DATALOADER.NUM_WORKERS", "0",
            "DATALOADER.TRAIN_X.BATCH_SIZE", "4", "DATALOADER.TEST.BATCH_SIZE", "8", "OPTIM.MAX_EPOCH", "2",
            "USE_CUDA", "False", "MODEL.BACKBONE.WEIGHTS", student, "TRAINER.PROMPTKD.TEACHER_WEIGHTS", teacher,
            "TRAINER.PROMPTKD.TEACHER_ROOT", world["teacher_root"], "TRAINER.PROMPTKD.PROMPT_DEPTH_VISION", "2",
            "TRAINER.PROMPTKD.KD_WEIGHT", "10.0", "TRAINER.RSM.DIM", "8"]


def _renames_into(out: Path, action=None):
    """Patch os.replace: record the renames into `out`; `action(n)` runs before the n-th one."""
    real_replace, names = os.replace, []

    def replace(src, dst, *args, **kwargs):
        if str(dst).startswith(str(out)):
            names.append(os.path.relpath(dst, out))
            if action is not None:
                action(len(names))
        return real_replace(src, dst, *args, **kwargs)

    return replace, names


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    world = tiny.make_world(tmp_path_factory.mktemp("resume_promptkd"))
    out = tmp_path_factory.mktemp("reference")
    replace, names = _renames_into(out)
    real_replace = os.replace
    os.replace = replace
    try:
        assert train.cli(_argv(world, out)) == 0
    finally:
        os.replace = real_replace
    return {"world": world, "out": out, "renames": names}


def test_ctrl_c_at_every_write_resumes_to_the_same_results(reference, tmp_path, monkeypatch):
    renames = reference["renames"]
    assert "VLPromptLearner/model-last.pth.tar" in renames and renames[-1] == "results.json"
    for n in range(1, len(renames) + 1):
        out = tmp_path / f"stop{n}"

        def interrupt(count, n=n):
            if count == n:
                raise KeyboardInterrupt

        replace, _ = _renames_into(out, interrupt)
        with monkeypatch.context() as patch:
            patch.setattr(os, "replace", replace)
            assert train.cli(_argv(reference["world"], out)) == 130
        assert train.cli(_argv(reference["world"], out)) == 0, n
        ref, got = reference["out"], out
        assert json.loads((got / "results.json").read_text()) == json.loads((ref / "results.json").read_text()), n
        for name in ("model-best.pth.tar", "model.pth.tar-2"):
            want = load_checkpoint(str(ref / FOLDER / name))
            have = load_checkpoint(str(got / FOLDER / name))
            assert want["epoch"] == have["epoch"] and want["val_result"] == have["val_result"], (n, name)
            for key, value in want["state_dict"].items():
                assert torch.equal(value, have["state_dict"][key]), (n, name, key)
