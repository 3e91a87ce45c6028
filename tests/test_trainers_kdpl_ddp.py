"""Class-agnostic KDPL_RSM in 2 processes (torchrun's environment, gloo on the CPU) equals the one-process run at
the same global batch: every process distils over the classes chosen from the whole batch's teacher softmax, and
the RSM manifold holds the whole batch's images.

Setting: the tiny fake OxfordPets (3 base classes x 2 shots = 6 images), global batch 6 (3 per process), 2 epochs
of one step, 9 class names with K_MAX 5 (there the two halves of the batch choose different sets of classes), an
IVLP student (every prompt trained), omega 5. Tolerance as in tests/test_ddp_promptkd.py (float32, rtol / atol
1e-5: the processes sum in another order). Choosing the classes from each process's own 3 images, or building M
from them, changes the weights by far more.
"""
from __future__ import annotations

import contextlib
import io
import json
import os

import pytest
import torch

import train
from dassl.utils.torchtools import load_checkpoint
from tests.ddp_launch import run_processes
from tests.trainers_tiny_setup import make_world

CHECKPOINT = os.path.join("VLPromptLearner", "model.pth.tar-2")
CLASS_LIST = ["abyssinian", "beagle", "red car", "blue sky", "oak tree", "small house", "sparrow", "sports car",
              "tabby cat"]
RTOL, ATOL = 1e-5, 1e-5


def cli(argv):
    """train.cli in this process; returns (exit status, what it printed to stderr)."""
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        status = train.cli(argv)
    return status, err.getvalue()


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("ddp_kdpl")
    world = make_world(root, make_teacher=False)
    names = root / "names.txt"
    names.write_text("\n".join(CLASS_LIST) + "\n")
    world["class_list"] = str(names)
    return world


def kdpl_argv(world, out, *opts):
    student, teacher = world["weights"]
    return ["--root", world["root"], "--seed", "1", "--trainer", "KDPL_RSM",
            "--dataset-config-file", "configs/datasets/oxford_pets.yaml",
            "--config-file", os.path.join("configs", "trainers", "KDPL_RSM", "vit_b16_c2_ep20_batch4_4+4ctx.yaml"),
            "--output-dir", str(out), "DATASET.NUM_SHOTS", "2", "DATASET.SUBSAMPLE_CLASSES", "base",
            "INPUT.SIZE", "(32, 32)", "DATALOADER.NUM_WORKERS", "0", "DATALOADER.TRAIN_X.BATCH_SIZE", "6",
            "DATALOADER.TEST.BATCH_SIZE", "8", "OPTIM.MAX_EPOCH", "2", "OPTIM.LR", "0.05", "OPTIM.WARMUP_EPOCH", "-1",
            "USE_CUDA", "False", "MODEL.BACKBONE.WEIGHTS", student, "TRAINER.KDPL.TEACHER_WEIGHTS", teacher,
            "TRAINER.IVLP.PROMPT_DEPTH_VISION", "2", "TRAINER.IVLP.PROMPT_DEPTH_TEXT", "2", "TRAINER.RSM.DIM", "8",
            "TRAINER.KDPL.CLASS_AGNOSTIC", "True", "TRAINER.KDPL.CLASS_LIST", world["class_list"],
            "TRAINER.KDPL.K_MAX", "5", *opts]


def test_two_process_class_agnostic_kdpl_rsm_equals_one_process(world, tmp_path):
    single, two = tmp_path / "single", tmp_path / "two"
    status, err = cli(kdpl_argv(world, single, "DATALOADER.SEEDED_AUGMENTATION", "True"))
    assert status == 0, err
    results = run_processes(cli, 2, (kdpl_argv(world, two),))
    assert [status for status, _ in results] == [0, 0], results

    one_state = load_checkpoint(str(single / CHECKPOINT))["state_dict"]
    two_state = load_checkpoint(str(two / CHECKPOINT))["state_dict"]
    trained = [key for key in one_state if "VPT" in key or key.startswith(("prompt_learner.ctx", "rsm."))]
    assert "rsm.phi_v.0.weight" in trained and "prompt_learner.ctx" in trained
    for key in trained:
        torch.testing.assert_close(two_state[key], one_state[key], rtol=RTOL, atol=ATOL, msg=key)
    assert json.loads((two / "results.json").read_text()) == json.loads((single / "results.json").read_text())
    assert "world size: 2" in (two / "log.txt").read_text()
