"""The per-run result file ``<OUTPUT_DIR>/results.json`` (its format is documented in ARCHITECTURE.md).

``protocol`` says what a run measured and which entries ``best`` / ``last`` hold:

- ``base2novel`` (distillation, PromptKD's transductive protocol), ``base_only`` (distillation on the
  base classes' unlabelled images only, scored as base2novel) and ``base2new`` (supervised prompt
  learners, CoOp's inductive protocol: trained on the base classes, tested on base and new):
  ``{"epoch", "base", "new", "hm"}``;
- ``cross`` (distillation on a target dataset), ``fewshot`` (a supervised run on all classes, e.g. the
  few-shot protocol or the ImageNet source of cross-dataset transfer) and ``evaluation`` (an
  evaluation-only run, ``train.py --eval-only``): ``{"epoch", "accuracy"}``.

Supervised and evaluation records also carry ``subsample`` (``DATASET.SUBSAMPLE_CLASSES``) and
``split``; evaluation records carry ``"eval_only": true``, ``model_dir`` (the checkpoint folder, "" for
untrained weights) and use the same entry for ``best`` and ``last``. An evaluation-only run of a
distillation trainer scores both splits of its protocol, so its entry is that protocol's entry
(``{"epoch", "base", "new", "hm"}`` for base2novel) and ``evaluated_protocol`` names it.

A distillation run with ``TRAINER.PROMPTKD.SELECT_HOLDOUT`` > 0 has one more entry beside ``best`` and
``last``: ``selected_by_agreement`` (:data:`SELECTED_BY_AGREEMENT`), the protocol's entry of the epoch
whose student agreed most with the teacher on held-out training images, plus ``agreement`` (%) and
``holdout_images``. Accuracies are percentages. The file
is written atomically (temporary file + rename), so a reader never sees half a file.
"""
from __future__ import annotations

import json
import os
from typing import Optional

from dassl.config import config_hash
from dassl.run_files import RESULTS_FILENAME, ZEROSHOT_PART_FILENAME
from dassl.utils import write_json

from datasets.protocols import DISTILL_PROTOCOLS

SUPERVISED_PROTOCOLS = ("base2new", "fewshot")
# The extra entry of a run with held-out model selection (TRAINER.PROMPTKD.SELECT_HOLDOUT > 0).
SELECTED_BY_AGREEMENT = "selected_by_agreement"
EVALUATION_PROTOCOL = "evaluation"
RESULT_PROTOCOLS = (*DISTILL_PROTOCOLS, *SUPERVISED_PROTOCOLS, EVALUATION_PROTOCOL)
# Protocols whose entries are {"epoch", "accuracy"}; the others hold base / new / hm.
ACCURACY_PROTOCOLS = ("cross", "fewshot", EVALUATION_PROTOCOL)


def harmonic_mean(base: float, new: float) -> float:
    """HM = 2 * base * new / (base + new); 0 when both are 0."""
    total = base + new
    return 0.0 if total == 0 else 2.0 * base * new / total


def base2novel_entry(epoch: int, base: float, new: float) -> dict:
    """One base2novel entry: epoch, base and new accuracy and their harmonic mean."""
    return {
        "epoch": int(epoch),
        "base": round(float(base), 4),
        "new": round(float(new), 4),
        "hm": round(harmonic_mean(float(base), float(new)), 4),
    }


def cross_entry(epoch: int, accuracy: float) -> dict:
    """One cross-dataset entry: epoch and accuracy."""
    return {"epoch": int(epoch), "accuracy": round(float(accuracy), 4)}


def build_results(cfg, protocol: str, best: dict, last: dict, trainer: Optional[str] = None,
                  extra: Optional[dict] = None) -> dict:
    """The results.json dictionary for a finished run described by ``cfg`` (``extra``: more fields)."""
    if protocol not in RESULT_PROTOCOLS:
        raise ValueError(f"unknown protocol {protocol!r}; expected one of {RESULT_PROTOCOLS}")
    record = {
        "trainer": trainer or cfg.TRAINER.NAME,
        "dataset": cfg.DATASET.NAME,
        "protocol": protocol,
        "seed": int(cfg.SEED),
        "shots": int(cfg.DATASET.NUM_SHOTS),
        "config_hash": config_hash(cfg),
        "best": best,
        "last": last,
    }
    record.update(extra or {})
    return record


def evaluation_results(cfg, accuracy: float, epoch: int, model_dir: str, split: str,
                       trainer: Optional[str] = None) -> dict:
    """The results.json dictionary of an evaluation-only run: one accuracy on ``split`` of the
    ``DATASET.SUBSAMPLE_CLASSES`` classes, for the weights of ``epoch`` loaded from ``model_dir``."""
    entry = cross_entry(epoch, accuracy)
    extra = {"eval_only": True, "subsample": cfg.DATASET.SUBSAMPLE_CLASSES, "split": split,
             "model_dir": model_dir or ""}
    return build_results(cfg, EVALUATION_PROTOCOL, entry, dict(entry), trainer=trainer, extra=extra)


def write_evaluation_record(output_dir: str, record: dict) -> Optional[str]:
    """Write an evaluation-only record, unless ``output_dir`` holds a training run's results.json.

    A training run's results must never be replaced by a later evaluation of its checkpoints; the note
    says how to keep both. Returns the path written, or None.
    """
    if not output_dir:
        return None
    existing = os.path.join(output_dir, RESULTS_FILENAME)
    if os.path.isfile(existing):
        try:
            protocol = read_results(existing).get("protocol")
        except (OSError, ValueError):
            protocol = None
        if protocol != EVALUATION_PROTOCOL:
            print(f"Note: {existing} holds the results of a training run and is kept; give the evaluation "
                  f"its own --output-dir to record it")
            return None
    path = write_results(output_dir, record)
    print(f"Evaluation results written to {path}")
    return path


def write_results(output_dir: str, results: dict) -> str:
    """Write ``results`` to ``<output_dir>/results.json`` atomically; returns the path."""
    path = os.path.join(output_dir, RESULTS_FILENAME)
    write_json(results, path)
    return path


def read_results(path: str) -> dict:
    """Read a results.json file (or the one inside a run directory)."""
    if os.path.isdir(path):
        path = os.path.join(path, RESULTS_FILENAME)
    with open(path, encoding="utf-8") as stream:
        return json.load(stream)


ZEROSHOT_PARTS = {"base2new": ("base", "new"), "all": ("all",)}


def write_zeroshot_results(root_dir: str, mode: str = "base2new") -> tuple[str, dict]:
    """Combine the parts of a zero-shot evaluation (``<root_dir>/<part>/zeroshot.json``, written by the
    ZeroshotCLIP runs of scripts/zeroshot.sh) into one ``<root_dir>/results.json``; zero-shot has no
    epochs, so best = last = epoch 0. Returns (path, entry); a missing part raises FileNotFoundError."""
    if mode not in ZEROSHOT_PARTS:
        raise ValueError(f"unknown zero-shot mode {mode!r}; expected one of {sorted(ZEROSHOT_PARTS)}")
    accuracy, info = {}, {}
    for part in ZEROSHOT_PARTS[mode]:
        path = os.path.join(root_dir, part, ZEROSHOT_PART_FILENAME)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{path} was not written; see the log in {os.path.join(root_dir, part)}")
        with open(path, encoding="utf-8") as stream:
            info = json.load(stream)
        accuracy[part] = info["accuracy"]
    if mode == "base2new":
        entry, protocol = base2novel_entry(0, accuracy["base"], accuracy["new"]), "base2novel"
    else:
        entry, protocol = cross_entry(0, accuracy["all"]), "cross"
    record = {"trainer": info["trainer"], "dataset": info["dataset"], "protocol": protocol, "seed": 0,
              "shots": 0, "config_hash": info.get("config_hash", ""), "best": entry, "last": entry}
    return write_results(root_dir, record), entry
