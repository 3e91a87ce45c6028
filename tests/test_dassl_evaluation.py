"""The Classification evaluator: printed block (log parsers depend on it), metrics, options."""
import re

import numpy as np
import pytest
import torch

from dassl.config import get_cfg_default
from dassl.evaluation import EVALUATOR_REGISTRY, Classification, build_evaluator
from dassl.evaluation.evaluator import confusion_matrix, macro_f1_score


def _logits(preds, num_classes):
    """One-hot-ish logits whose argmax is ``preds``."""
    out = torch.zeros(len(preds), num_classes)
    out[torch.arange(len(preds)), torch.tensor(preds)] = 1.0
    return out


def _manual_macro_f1(y_true, y_pred):
    scores = []
    for c in sorted(set(y_true)):
        tp = sum(t == c and p == c for t, p in zip(y_true, y_pred))
        fp = sum(t != c and p == c for t, p in zip(y_true, y_pred))
        fn = sum(t == c and p != c for t, p in zip(y_true, y_pred))
        precision = tp / (tp + fp) if tp + fp else 0.0
        recall = tp / (tp + fn) if tp + fn else 0.0
        scores.append(2 * precision * recall / (precision + recall) if precision + recall else 0.0)
    return 100 * sum(scores) / len(scores)


def test_build_evaluator_prints_and_builds(capsys):
    cfg = get_cfg_default()
    evaluator = build_evaluator(cfg, lab2cname={0: "cat"})
    assert isinstance(evaluator, Classification)
    assert "Loading evaluator: Classification" in capsys.readouterr().out
    assert "Classification" in EVALUATOR_REGISTRY.registered_names()
    cfg.TEST.EVALUATOR = "Classifcation"
    with pytest.raises(ValueError, match="Classification"):
        build_evaluator(cfg)


def test_printed_block_is_exact(capsys):
    evaluator = Classification(get_cfg_default())
    # 1,200 samples over two batches; 1,003 correct.
    y_true = [i % 3 for i in range(1200)]
    y_pred = list(y_true)
    wrong = list(range(0, 1200, 6))[:197]
    for i in wrong:
        y_pred[i] = (y_true[i] + 1) % 3
    evaluator.process(_logits(y_pred[:700], 3), torch.tensor(y_true[:700]))
    evaluator.process(_logits(y_pred[700:], 3), torch.tensor(y_true[700:]))
    results = evaluator.evaluate()
    out = capsys.readouterr().out

    acc = 100 * 1003 / 1200
    f1 = _manual_macro_f1(y_true, y_pred)
    expected = (
        "=> result\n"
        "* total: 1,200\n"
        "* correct: 1,003\n"
        f"* accuracy: {acc:.1f}%\n"
        f"* error: {100 - acc:.1f}%\n"
        f"* macro_f1: {f1:.1f}%\n"
    )
    assert out == expected
    assert list(results) == ["accuracy", "error_rate", "macro_f1"]
    assert results["accuracy"] == pytest.approx(acc)
    assert results["macro_f1"] == pytest.approx(f1)
    # The regex of PromptKD's parse_test_res.py finds the accuracy.
    assert re.findall(r"\* accuracy: ([\.\deE+-]+)%", out) == [f"{acc:.1f}"]


def test_reset_clears_state(capsys):
    evaluator = Classification(get_cfg_default())
    evaluator.process(_logits([0, 1], 2), torch.tensor([1, 1]))
    evaluator.reset()
    evaluator.process(_logits([1], 2), torch.tensor([1]))
    assert evaluator.evaluate()["accuracy"] == 100.0
    assert "* total: 1\n" in capsys.readouterr().out


def test_macro_f1_only_over_true_labels():
    # Label 2 is predicted but never true: it does not enter the average (sklearn labels=unique(y_true)).
    y_true = np.array([0, 0, 1, 1])
    y_pred = np.array([0, 2, 1, 1])
    assert macro_f1_score(y_true, y_pred) == pytest.approx((2 / 3 + 1.0) / 2)


def test_per_class_result_and_confusion_matrix(tmp_path, capsys):
    cfg = get_cfg_default()
    cfg.TEST.PER_CLASS_RESULT = True
    cfg.TEST.COMPUTE_CMAT = True
    cfg.OUTPUT_DIR = str(tmp_path / "out")
    evaluator = Classification(cfg, lab2cname={0: "cat", 1: "dog"})
    evaluator.process(_logits([0, 0, 1, 0], 2), torch.tensor([0, 0, 1, 1]))
    results = evaluator.evaluate()
    out = capsys.readouterr().out
    assert "=> per-class result\n" in out
    assert "* class: 0 (cat)\ttotal: 2\tcorrect: 2\tacc: 100.0%\n" in out
    assert "* class: 1 (dog)\ttotal: 2\tcorrect: 1\tacc: 50.0%\n" in out
    assert "* average: 75.0%\n" in out
    assert results["perclass_accuracy"] == 75.0
    cmat = torch.load(tmp_path / "out" / "cmat.pt", weights_only=True)
    assert torch.allclose(cmat, torch.tensor([[1.0, 0.0], [0.5, 0.5]], dtype=cmat.dtype))
    assert "Confusion matrix is saved to" in out


def test_per_class_needs_class_names():
    cfg = get_cfg_default()
    cfg.TEST.PER_CLASS_RESULT = True
    with pytest.raises(ValueError, match="lab2cname"):
        Classification(cfg)


def test_confusion_matrix_rows_normalised():
    cmat = confusion_matrix(np.array([0, 1, 1, 2]), np.array([0, 1, 2, 2]))
    assert cmat.shape == (3, 3)
    assert np.allclose(cmat.sum(axis=1), 1.0)
    assert cmat[1, 2] == 0.5
