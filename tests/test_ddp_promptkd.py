"""A tiny PromptKD run through train.py in 2 processes (torchrun's environment, gloo on the CPU) equals the
one-process run at the same global batch: the KD loss's B x C normalisation with the local B, the
projector's BatchNorm over the global batch, the split evaluation.

Setting: PromptKD's global batch 8 and LR 0.005, 2 epochs of one step (4 images per process).
Tolerance: float32, rtol 1e-5 / atol 1e-5. The processes sum in another order than one process does
(the all-reduce adds the processes' partial sums); this tiny random-weight run amplifies such differences more than the
toy does: reordering the 8 images inside a one-process batch moves its weights by ~1e-6 relative,
as much as the 2-process run differs from the 1-process run. A real difference (no gradient averaging,
BatchNorm over half the batch, another KD normalisation) moves them by more than 1e-3.
"""
from __future__ import annotations

import json
import os

import pytest
import torch

import trainers_tiny_setup as tiny
from dassl.utils.torchtools import load_checkpoint
from ddp_launch import cli, result_lines, run_processes

PROMPTKD_YAML = os.path.join("configs", "trainers", "PromptKD", "vit_b16_c2_ep20_batch8_4+4ctx.yaml")
CHECKPOINT = os.path.join("VLPromptLearner", "model.pth.tar-2")
RTOL, ATOL = 1e-5, 1e-5


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return tiny.make_world(tmp_path_factory.mktemp("ddp_promptkd"))


def promptkd_argv(world, out, *opts, flags=()):
    student, teacher = world["weights"]
    return ["--root", world["root"], "--seed", "1", "--trainer", "PromptKD", "--config-file", PROMPTKD_YAML,
            "--output-dir", str(out), *flags,
            "DATASET.NAME", tiny.DATASET, "DATASET.NUM_SHOTS", "0", "TRAINER.MODAL", "base2novel",
            "INPUT.SIZE", "(32, 32)", "DATALOADER.NUM_WORKERS", "0", "DATALOADER.TRAIN_X.BATCH_SIZE", "8",
            "DATALOADER.TEST.BATCH_SIZE", "8", "OPTIM.MAX_EPOCH", "2", "OPTIM.LR", "0.005", "OPTIM.WARMUP_EPOCH", "-1",
            "USE_CUDA", "False", "MODEL.BACKBONE.WEIGHTS", student, "TRAINER.PROMPTKD.TEACHER_WEIGHTS", teacher,
            "TRAINER.PROMPTKD.TEACHER_ROOT", world["teacher_root"], "TRAINER.PROMPTKD.PROMPT_DEPTH_VISION", "2",
            "TRAINER.PROMPTKD.KD_WEIGHT", "10.0", *opts]


def test_two_process_promptkd_equals_one_process_and_evaluates_the_same(world, tmp_path):
    single, two = tmp_path / "single", tmp_path / "two"
    status, err = cli(promptkd_argv(world, single, "DATALOADER.SEEDED_AUGMENTATION", "True"))
    assert status == 0, err
    results = run_processes(cli, 2, (promptkd_argv(world, two),))
    assert [status for status, _ in results] == [0, 0], results

    one_state = load_checkpoint(str(single / CHECKPOINT))["state_dict"]
    two_state = load_checkpoint(str(two / CHECKPOINT))["state_dict"]
    trained = [key for key in one_state if "VPT" in key]  # prompts, projector (BatchNorm statistics included)
    assert "VPT_image_trans.conv1.1.running_var" in trained
    for key in trained:
        if one_state[key].is_floating_point():
            torch.testing.assert_close(two_state[key], one_state[key], rtol=RTOL, atol=ATOL, msg=key)
        else:
            assert torch.equal(two_state[key], one_state[key]), key
    assert two_state["VPT_image_trans.conv1.1.num_batches_tracked"] == 2  # one global batch per epoch
    assert one_state["VPT_image_trans.conv1.1.running_mean"].abs().max() > 0.01  # statistics were gathered
    one_results = json.loads((single / "results.json").read_text())
    assert json.loads((two / "results.json").read_text()) == one_results
    assert "world size: 2" in (two / "log.txt").read_text()

    flags = ("--eval-only", "--model-dir", str(single), "--load-epoch", "2")
    status, err = cli(promptkd_argv(world, tmp_path / "eval1", flags=flags))
    assert status == 0, err
    results = run_processes(cli, 2, (promptkd_argv(world, tmp_path / "eval2", flags=flags),))
    assert [status for status, _ in results] == [0, 0], results
    lines = result_lines(tmp_path / "eval1" / "log.txt")
    assert lines and result_lines(tmp_path / "eval2" / "log.txt") == lines


def test_two_process_promptkd_rsm_equals_one_process(world, tmp_path):
    """H(M) is computed over the image rows of the whole global batch (gathered with their gradients)."""
    single, two = tmp_path / "single", tmp_path / "two"
    def argv(out, *opts):
        items = promptkd_argv(world, out, "TRAINER.RSM.WEIGHT", "50.0", "TRAINER.RSM.DIM", "8", *opts)
        items[items.index("--trainer") + 1] = "PromptKD_RSM"
        return items

    status, err = cli(argv(single, "DATALOADER.SEEDED_AUGMENTATION", "True"))
    assert status == 0, err
    results = run_processes(cli, 2, (argv(two),))
    assert [status for status, _ in results] == [0, 0], results
    one_state = load_checkpoint(str(single / CHECKPOINT))["state_dict"]
    two_state = load_checkpoint(str(two / CHECKPOINT))["state_dict"]
    trained = [key for key in one_state if key.startswith("rsm.") or "VPT" in key]
    assert any(key.startswith("rsm.") for key in trained)
    for key in trained:
        if one_state[key].is_floating_point():
            torch.testing.assert_close(two_state[key], one_state[key], rtol=RTOL, atol=ATOL, msg=key)
