"""Classification evaluator: accuracy, error and macro-F1, printed in Dassl's exact block format.

Log parsers (PromptKD's ``parse_test_res.py`` and ours) match the printed lines
``* accuracy: X.X%`` etc., so the block must not change.

With several processes (torchrun) each process evaluates a disjoint shard of the split
(`dassl.data.samplers.ShardSampler`); `Classification.evaluate` gathers every process's labels and
predictions first (in rank order, i.e. the split's order), so every process returns the numbers one
process computes on the whole split, each image counted once.
"""
from __future__ import annotations

import os.path as osp
from collections import OrderedDict, defaultdict
from typing import Dict, List, Optional

import numpy as np
import torch

from dassl.evaluation.build import EVALUATOR_REGISTRY
from dassl.utils.distributed import all_gather_objects, is_main_process, world_size
from dassl.utils.tools import mkdir_if_missing

__all__ = ["EvaluatorBase", "Classification", "macro_f1_score", "confusion_matrix"]


def macro_f1_score(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Unweighted mean of per-class F1 over the classes present in ``y_true`` (as sklearn's
    ``f1_score(..., average="macro", labels=np.unique(y_true))``; an undefined F1 counts as 0)."""
    y_true = np.asarray(y_true)
    y_pred = np.asarray(y_pred)
    labels = np.unique(y_true)
    if labels.size == 0:
        return 0.0
    scores = []
    for label in labels:
        tp = np.sum((y_pred == label) & (y_true == label))
        fp = np.sum((y_pred == label) & (y_true != label))
        fn = np.sum((y_pred != label) & (y_true == label))
        denom = 2 * tp + fp + fn
        scores.append(0.0 if denom == 0 else 2.0 * tp / denom)
    return float(np.mean(scores))


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, normalize_rows: bool = True) -> np.ndarray:
    """Confusion matrix over the sorted union of labels; rows are true classes.

    With ``normalize_rows`` each row sums to 1 (sklearn's ``normalize="true"``); empty rows stay 0.
    """
    y_true = np.asarray(y_true)
    y_pred = np.asarray(y_pred)
    labels = np.union1d(y_true, y_pred)
    index = {label: i for i, label in enumerate(labels)}
    cmat = np.zeros((len(labels), len(labels)), dtype=np.float64)
    for t, p in zip(y_true, y_pred):
        cmat[index[t], index[p]] += 1
    if normalize_rows:
        row_sums = cmat.sum(axis=1, keepdims=True)
        cmat = np.divide(cmat, row_sums, out=np.zeros_like(cmat), where=row_sums > 0)
    return cmat


class EvaluatorBase:
    """Interface: ``reset()``, ``process(model_output, ground_truth)``, ``evaluate() -> OrderedDict``."""

    def __init__(self, cfg) -> None:
        self.cfg = cfg

    def reset(self) -> None:
        raise NotImplementedError

    def process(self, mo: torch.Tensor, gt: torch.Tensor) -> None:
        raise NotImplementedError

    def evaluate(self) -> "OrderedDict[str, float]":
        raise NotImplementedError


@EVALUATOR_REGISTRY.register()
class Classification(EvaluatorBase):
    """Top-1 classification results; optional per-class accuracy and confusion matrix."""

    def __init__(self, cfg, lab2cname: Optional[Dict[int, str]] = None, **kwargs) -> None:
        super().__init__(cfg)
        self._lab2cname = lab2cname
        self._per_class_res: Optional[Dict[int, List[int]]] = None
        if cfg.TEST.PER_CLASS_RESULT:
            if lab2cname is None:
                raise ValueError("TEST.PER_CLASS_RESULT needs lab2cname (label -> class name)")
            self._per_class_res = defaultdict(list)
        self.reset()

    def reset(self) -> None:
        self._correct = 0
        self._total = 0
        self._y_true: List[int] = []
        self._y_pred: List[int] = []
        if self._per_class_res is not None:
            self._per_class_res = defaultdict(list)

    def process(self, mo: torch.Tensor, gt: torch.Tensor) -> None:
        """Accumulate one batch: ``mo`` is ``[B, C]`` scores, ``gt`` ``[B]`` labels."""
        pred = mo.max(1)[1]
        matches = pred.eq(gt).int()
        self._correct += int(matches.sum().item())
        self._total += gt.shape[0]
        gt_list = gt.detach().cpu().tolist()
        self._y_true.extend(gt_list)
        self._y_pred.extend(pred.detach().cpu().tolist())
        if self._per_class_res is not None:
            for label, hit in zip(gt_list, matches.detach().cpu().tolist()):
                self._per_class_res[label].append(hit)

    def _gather_processes(self) -> None:
        """Replace this process's records by those of all processes (rank order), recounting everything."""
        parts = all_gather_objects((self._y_true, self._y_pred))
        self._y_true = [label for part in parts for label in part[0]]
        self._y_pred = [pred for part in parts for pred in part[1]]
        hits = [int(t == p) for t, p in zip(self._y_true, self._y_pred)]
        self._correct = sum(hits)
        self._total = len(hits)
        if self._per_class_res is not None:
            self._per_class_res = defaultdict(list)
            for label, hit in zip(self._y_true, hits):
                self._per_class_res[label].append(hit)

    def evaluate(self) -> "OrderedDict[str, float]":
        """Return accuracy, error_rate, macro_f1 (percent; + perclass_accuracy) and print the block.

        With several processes every process must call it (it gathers their records first).
        """
        if world_size() > 1:
            self._gather_processes()
        results: "OrderedDict[str, float]" = OrderedDict()
        acc = 100.0 * self._correct / self._total if self._total else 0.0
        err = 100.0 - acc
        macro_f1 = 100.0 * macro_f1_score(np.array(self._y_true), np.array(self._y_pred))
        results["accuracy"] = acc
        results["error_rate"] = err
        results["macro_f1"] = macro_f1

        print(
            "=> result\n"
            f"* total: {self._total:,}\n"
            f"* correct: {self._correct:,}\n"
            f"* accuracy: {acc:.1f}%\n"
            f"* error: {err:.1f}%\n"
            f"* macro_f1: {macro_f1:.1f}%"
        )

        if self._per_class_res is not None:
            print("=> per-class result")
            accs = []
            for label in sorted(self._per_class_res):
                hits = self._per_class_res[label]
                correct, total = sum(hits), len(hits)
                class_acc = 100.0 * correct / total
                accs.append(class_acc)
                classname = self._lab2cname.get(label, "") if self._lab2cname else ""
                print(
                    f"* class: {label} ({classname})\t"
                    f"total: {total:,}\tcorrect: {correct:,}\tacc: {class_acc:.1f}%"
                )
            mean_acc = float(np.mean(accs)) if accs else 0.0
            print(f"* average: {mean_acc:.1f}%")
            results["perclass_accuracy"] = mean_acc

        if self.cfg.TEST.COMPUTE_CMAT and is_main_process():
            cmat = confusion_matrix(np.array(self._y_true), np.array(self._y_pred))
            mkdir_if_missing(self.cfg.OUTPUT_DIR)
            save_path = osp.join(self.cfg.OUTPUT_DIR, "cmat.pt")
            torch.save(torch.from_numpy(cmat), save_path)
            print(f"Confusion matrix is saved to {save_path}")

        return results
