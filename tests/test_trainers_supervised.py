"""The shared supervised protocol (trainers/supervised.py): the loss, results.json for base-to-new,
all-class and evaluation-only runs, model selection, and PromptSRC as a full baseline."""
import math

import pytest
import torch

from dassl.config import get_cfg_default
from tests.supervised_tiny_setup import check_base2new_results, read_json, run, saved_state, tiny_world
from trainers.config import extend_cfg
from trainers.results import build_results, cross_entry, evaluation_results
from trainers.supervised import results_protocol, supervised_loss


def test_supervised_loss_is_mean_cross_entropy():
    logits = torch.tensor([[2.0, -1.0, 0.5], [0.0, 3.0, -2.0]])
    label = torch.tensor([2, 1])
    by_hand = []
    for row, target in zip(logits.tolist(), label.tolist()):
        log_z = math.log(sum(math.exp(v) for v in row))
        by_hand.append(log_z - row[target])
    assert supervised_loss(logits, label).item() == pytest.approx(sum(by_hand) / 2, rel=1e-6)


def test_protocol_labels_and_records():
    assert results_protocol("base") == "base2new"
    assert results_protocol("all") == results_protocol("new") == "fewshot"
    cfg = extend_cfg(get_cfg_default())
    cfg.merge_from_list(["DATASET.NAME", "OxfordPets", "DATASET.SUBSAMPLE_CLASSES", "new", "SEED", 2,
                         "TRAINER.NAME", "CoOp"])
    record = evaluation_results(cfg, 61.234567, 50, "out/run", "test")
    assert record["protocol"] == "evaluation" and record["eval_only"] is True and record["seed"] == 2
    assert record["best"] == record["last"] == {"epoch": 50, "accuracy": 61.2346}
    assert record["subsample"] == "new" and record["model_dir"] == "out/run"
    assert build_results(cfg, "fewshot", cross_entry(1, 50), cross_entry(1, 50))["protocol"] == "fewshot"
    with pytest.raises(ValueError, match="protocol"):
        build_results(cfg, "base2novle", {}, {})


def test_promptsrc_is_a_full_baseline(tmp_path, capsys):
    world = tiny_world(tmp_path)
    trainer = run(world, "PromptSRC", tmp_path / "run")
    out = capsys.readouterr().out
    assert "Using GPA model for final inference..." in out
    record = check_base2new_results(tmp_path / "run", "PromptSRC")
    # the final evaluation scores the GPA prompts, which are those saved in the last checkpoint
    state = saved_state(tmp_path / "run", "VLPromptLearner")
    assert torch.equal(state["prompt_learner.ctx"], trainer.model.prompt_learner.ctx.detach())
    assert trainer.model.prompt_learner.classnames == trainer.classnames  # restored after the new classes
    assert record["last"]["new"] == pytest.approx(trainer.final_entries["last"]["new"])

    # an evaluation-only run into the training folder keeps the training results
    run(world, "PromptSRC", tmp_path / "run", model_dir=tmp_path / "run", load_epoch=1, subsample="new")
    assert "holds the results of a training run and is kept" in capsys.readouterr().out
    assert read_json(tmp_path / "run" / "results.json") == record


def test_all_classes_and_best_val_selection(tmp_path):
    world = tiny_world(tmp_path)
    trainer = run(world, "CoOp", tmp_path / "run", subsample="all",
                  opts=["OPTIM.MAX_EPOCH", "2", "TEST.FINAL_MODEL", "best_val"])
    record = read_json(tmp_path / "run" / "results.json")
    assert record["protocol"] == "fewshot" and record["subsample"] == "all"
    assert set(record["last"]) == {"epoch", "accuracy"} and record["last"]["epoch"] == 2
    best = torch.load(tmp_path / "run" / "prompt_learner" / "model-best.pth.tar", map_location="cpu",
                      weights_only=False)
    assert record["best"]["epoch"] == best["epoch"]  # the best-on-val checkpoint, scored on the test split
    assert trainer.model.prompt_learner.token_prefix.shape[0] == 5  # all classes


def test_no_test_writes_no_results(tmp_path, capsys):
    world = tiny_world(tmp_path)
    run(world, "CoOp", tmp_path / "run", opts=["TEST.NO_TEST", "True"])
    assert not (tmp_path / "run" / "results.json").exists()
    assert "no results.json is written" in capsys.readouterr().out
