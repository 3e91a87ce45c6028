"""PromptKD / PromptKD_RSM end to end on a tiny fake dataset: WEIGHT 0 equality, trainable sets,
checkpoint keys, base/new slicing, text features computed once, results.json."""
import json
import math
import os

import pytest
import torch

import datasets  # noqa: F401  (registers the readers)
import trainers  # noqa: F401  (registers the trainers)
from dassl.engine import build_trainer
from dassl.utils import set_random_seed
from trainers import promptsrc_model
from trainers.distill import class_vectors_for_split, is_student_trainable
from trainers.run_record import RunRecord

import trainers_tiny_setup as tiny

PROMPTKD_TRAINABLE = {
    "image_encoder.VPT",
    "image_encoder.transformer.resblocks.1.VPT_shallow",
    "VPT_image_trans.conv1.0.weight", "VPT_image_trans.conv1.0.bias",
    "VPT_image_trans.conv1.1.weight", "VPT_image_trans.conv1.1.bias",
    "VPT_image_trans.conv1.3.weight", "VPT_image_trans.conv1.3.bias",
}
RSM_TRAINABLE = {f"rsm.phi_{branch}.{i}.{kind}" for branch in "vw" for i in (0, 2) for kind in ("weight", "bias")}


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return tiny.make_world(tmp_path_factory.mktemp("promptkd"))


def _run(world, trainer_name, output_dir, opts=(), train=True):
    cfg = tiny.make_cfg(world["root"], trainer_name, str(output_dir), world["weights"], world["teacher_root"],
                        opts=list(opts))
    set_random_seed(cfg.SEED)
    trainer = build_trainer(cfg)
    losses = []
    original_step = trainer.forward_backward

    def recording_step(batch):
        summary = original_step(batch)
        losses.append(summary)
        return summary

    trainer.forward_backward = recording_step
    if train:
        trainer.train()
    return trainer, losses


def test_class_vectors_are_sliced_base_first_then_new():
    vectors = torch.arange(5).float().unsqueeze(1)
    assert class_vectors_for_split(vectors, "base2novel", "val").flatten().tolist() == [0, 1, 2]
    assert class_vectors_for_split(vectors, "base2novel", "test").flatten().tolist() == [3, 4]
    assert class_vectors_for_split(vectors[:4], "base2novel", "val").flatten().tolist() == [0, 1]
    assert class_vectors_for_split(vectors, "cross", "val").flatten().tolist() == [0, 1, 2, 3, 4]
    assert class_vectors_for_split(vectors, "cross", "test").flatten().tolist() == [0, 1, 2, 3, 4]


def test_trainable_rule():
    assert is_student_trainable("image_encoder.VPT")
    assert is_student_trainable("VPT_image_trans.conv1.0.weight")
    assert is_student_trainable("rsm.phi_w.0.weight")
    assert is_student_trainable("prompt_learner.ctx")
    assert not is_student_trainable("prompt_learner.ZS_image_encoder.conv1.weight")
    assert not is_student_trainable("image_encoder.conv1.weight")
    assert not is_student_trainable("logit_scale")


@pytest.fixture(scope="module")
def runs(world, tmp_path_factory):
    """Three 1-epoch runs with seed 1 (PromptKD, PromptKD_RSM with WEIGHT 0, PromptKD_RSM with the
    default weight, the last one for 2 epochs), counting the teacher's text-encoder calls of the last."""
    out = tmp_path_factory.mktemp("runs")
    host = _run(world, "PromptKD", out / "pkd")
    off = _run(world, "PromptKD_RSM", out / "off", opts=["TRAINER.RSM.WEIGHT", 0.0])
    calls = []
    original_forward = promptsrc_model.TextEncoder.forward

    def counting_forward(self, prompts, tokenized_prompts):
        calls.append(prompts.shape[0])
        return original_forward(self, prompts, tokenized_prompts)

    promptsrc_model.TextEncoder.forward = counting_forward
    try:
        on = _run(world, "PromptKD_RSM", out / "on", opts=["OPTIM.MAX_EPOCH", 2])
    finally:
        promptsrc_model.TextEncoder.forward = original_forward
    return {"out": out, "host": host, "off": off, "on": on, "text_calls": calls}


def test_rsm_weight_zero_equals_promptkd(runs):
    (host, host_losses), (off, off_losses) = runs["host"], runs["off"]
    assert len(host_losses) == 2
    assert [s["loss"] for s in host_losses] == [s["loss"] for s in off_losses]
    host_state, off_state = host.student.state_dict(), off.student.state_dict()
    assert set(off_state) - set(host_state) == {k for k in off_state if k.startswith("rsm.")} != set()
    for key, value in host_state.items():
        assert torch.equal(value, off_state[key]), key


def test_rsm_term_is_added_and_logged(runs):
    host_losses, on_losses = runs["host"][1], runs["on"][1]
    first = on_losses[0]
    assert set(first) == {"loss", "kd", "rsm", "H", "max_p"}
    assert first["kd"] == pytest.approx(host_losses[0]["loss"], rel=1e-5)  # same first batch and weights
    assert first["loss"] == pytest.approx(first["kd"] + first["rsm"], rel=1e-5)
    assert first["rsm"] == pytest.approx(50.0 * first["H"], rel=1e-5)
    assert 0 < first["H"] <= math.log(4 + tiny.NUM_CLASSES) + 1e-5
    assert 1 / (4 + tiny.NUM_CLASSES) - 1e-6 <= first["max_p"] <= 1
    assert on_losses[1]["loss"] != host_losses[1]["loss"]


def test_trainable_sets_and_checkpoint_layout(runs):
    host, on, out = runs["host"][0], runs["on"][0], runs["out"]
    assert {n for n, p in host.student.named_parameters() if p.requires_grad} == PROMPTKD_TRAINABLE
    assert {n for n, p in on.student.named_parameters() if p.requires_grad} == PROMPTKD_TRAINABLE | RSM_TRAINABLE
    ckpt = torch.load(out / "pkd" / "VLPromptLearner" / "model-best.pth.tar", weights_only=False)
    assert set(ckpt) >= {"state_dict", "epoch", "optimizer", "scheduler", "val_result"}
    keys = set(ckpt["state_dict"])
    assert PROMPTKD_TRAINABLE <= keys
    assert {"logit_scale", "image_encoder.conv1.weight", "image_encoder.proj",
            "VPT_image_trans.conv1.1.running_mean", "VPT_image_trans.conv1.1.num_batches_tracked"} <= keys
    assert not any(k.startswith(("text_encoder", "prompt_learner", "transformer.", "rsm.")) for k in keys)
    rsm_ckpt = torch.load(out / "off" / "VLPromptLearner" / "model.pth.tar-1", weights_only=False)
    assert RSM_TRAINABLE <= set(rsm_ckpt["state_dict"])


def test_text_features_computed_once_and_results_written(runs):
    trainer, losses = runs["on"]
    assert runs["text_calls"] == [tiny.NUM_CLASSES]  # once, at build time; never per batch or test
    assert len(losses) == 4

    results = json.loads((runs["out"] / "on" / "results.json").read_text())
    assert results["trainer"] == "PromptKD_RSM" and results["protocol"] == "base2novel"
    assert results["seed"] == 1 and len(results["config_hash"]) == 12
    val_history = trainer.record.val_by_epoch
    assert set(val_history) == {1, 2}
    best, last = results["best"], results["last"]
    assert last["epoch"] == 2 and last["base"] == pytest.approx(val_history[2], abs=1e-3)
    best_epoch = max(val_history, key=lambda e: (val_history[e], -e))
    assert best["epoch"] == best_epoch and best["base"] == pytest.approx(val_history[best_epoch], abs=1e-3)
    # No weights were scored twice on a split: val after each epoch, then new for the last epoch's weights
    # and, only when the best-on-base checkpoint is another epoch's, new for those weights too.
    assert trainer.evaluation_passes == (3 if best_epoch == 2 else 4)
    for entry in (best, last):
        total = entry["base"] + entry["new"]
        expected_hm = 2 * entry["base"] * entry["new"] / total if total else 0.0
        assert entry["hm"] == pytest.approx(expected_hm, abs=1e-3)


@pytest.fixture(scope="module")
def untrained(world, tmp_path_factory):
    return _run(world, "PromptKD", tmp_path_factory.mktemp("untrained"), train=False)[0]


def test_test_scores_each_split_against_its_class_slice(untrained):
    trainer = untrained
    seen = []
    original = trainer.student_logits

    def recording(features, class_vectors):
        seen.append(class_vectors.shape[0])
        return original(features, class_vectors)

    trainer.student_logits = recording
    trainer.test("val")
    trainer.test("test")
    n_base = math.ceil(tiny.NUM_CLASSES / 2)
    assert seen == [n_base, tiny.NUM_CLASSES - n_base]


def test_final_evaluation_loads_best_only_when_it_is_another_epoch_and_scores_nothing_twice(untrained,
                                                                                           monkeypatch):
    trainer = untrained
    assert trainer.cfg.TEST.FINAL_MODEL == "best_val"
    calls = []

    def load(directory, epoch=None):
        calls.append(("load", directory))
        trainer.weights_epoch = best_in_file

    monkeypatch.setattr(trainer, "evaluate", lambda split: calls.append((trainer.weights_epoch, split)) or 50.0)
    monkeypatch.setattr(trainer, "load_model", load)
    cases = (
        ({1: 60.0, 2: 70.0}, 2, [(2, "test")]),  # best == last: nothing loaded, new scored once
        ({1: 80.0, 2: 70.0}, 1, [(2, "test"), ("load", trainer.output_dir), (1, "test")]),
        ({2: 70.0}, 1, [(2, "test"), ("load", trainer.output_dir), (1, "val"), (1, "test")]),  # history lost
    )
    for history, best_in_file, expected in cases:
        calls.clear()
        trainer.record = RunRecord("base2novel")
        for epoch, accuracy in history.items():
            trainer.record.add(epoch, "val", accuracy)
        trainer.weights_epoch = 2
        trainer.test_final_model()
        assert calls == expected
        assert trainer.final_epochs == {"best": best_in_file, "last": 2}


def test_load_model_drops_token_buffers_and_reports_keys(untrained, tmp_path, capsys):
    trainer = untrained
    folder = tmp_path / "saved" / "VLPromptLearner"
    folder.mkdir(parents=True)
    state = {k: v.clone() for k, v in trainer.student.state_dict().items()}
    state["image_encoder.VPT"] = state["image_encoder.VPT"] + 1.0
    state["prompt_learner.token_prefix"] = torch.zeros(3, 1, 4)
    state["something.else"] = torch.zeros(1)
    del state["VPT_image_trans.conv1.3.bias"]
    torch.save({"state_dict": state, "epoch": 7, "optimizer": None, "scheduler": None, "val_result": 50.0},
               folder / "model-best.pth.tar")
    trainer.load_model(str(tmp_path / "saved"))
    out = capsys.readouterr().out
    assert f'Loading weights to VLPromptLearner from "{folder / "model-best.pth.tar"}" (epoch = 7)' in out
    assert "['VPT_image_trans.conv1.3.bias']" in out and "['something.else']" in out
    assert "token_prefix" not in out
    assert torch.equal(trainer.student.image_encoder.VPT, state["image_encoder.VPT"])
    with pytest.raises(FileNotFoundError, match="Model not found"):
        trainer.load_model(str(tmp_path / "nowhere"))


def test_cross_protocol_uses_all_classes_and_writes_accuracy(world, tmp_path):
    import shutil

    xd = os.path.join(world["teacher_root"], "ImageNet-xd", "VLPromptLearner_large", "model.pth.tar-20")
    os.makedirs(os.path.dirname(xd), exist_ok=True)
    shutil.copy(world["teacher_ckpt"], xd)
    trainer, _ = _run(world, "PromptKD", tmp_path / "xd", opts=["TRAINER.MODAL", "cross"])
    assert trainer.text_features.shape[0] == tiny.NUM_CLASSES
    results = json.loads((tmp_path / "xd" / "results.json").read_text())
    assert results["protocol"] == "cross"
    assert set(results["best"]) == set(results["last"]) == {"epoch", "accuracy"}
    assert results["last"]["accuracy"] == pytest.approx(trainer.record.val_by_epoch[1], abs=1e-3)


def test_results_record_the_real_shot_count_when_classes_have_fewer(world, tmp_path, capsys):
    _run(world, "PromptKD", tmp_path / "shots", opts=["DATASET.NUM_SHOTS", 1000, "OPTIM.MAX_EPOCH", 1])
    results = json.loads((tmp_path / "shots" / "results.json").read_text())
    assert results["shots"] == 1000
    counts = results["shots_per_class"]
    assert 1 <= counts["min"] <= counts["max"] < 1000


def test_eval_only_records_base_and_new_without_touching_the_training_results(world, runs, tmp_path):
    trained = runs["out"] / "on"
    before = (trained / "results.json").read_text()
    trainer, _ = _run(world, "PromptKD_RSM", tmp_path / "eval", train=False)
    trainer.evaluate_saved_model(str(trained), epoch=2)
    record = json.loads((tmp_path / "eval" / "results.json").read_text())
    assert record["protocol"] == "evaluation" and record["eval_only"] is True
    assert record["evaluated_protocol"] == "base2novel" and record["model_dir"] == str(trained)
    last = json.loads(before)["last"]
    assert record["best"] == record["last"] and record["best"]["epoch"] == 2
    assert record["best"]["base"] == pytest.approx(last["base"], abs=1e-3)
    assert record["best"]["new"] == pytest.approx(last["new"], abs=1e-3)
    # Evaluating into the training run's own folder keeps its results.json.
    again, _ = _run(world, "PromptKD_RSM", trained, train=False)
    again.evaluate_saved_model(str(trained), epoch=2)
    assert (trained / "results.json").read_text() == before
