"""The per-run result file ``<OUTPUT_DIR>/results.json`` (its format is documented in ARCHITECTURE.md).

base2novel runs record ``{"epoch", "base", "new", "hm"}`` for the best-on-base checkpoint and for the
last epoch; cross runs record ``{"epoch", "accuracy"}``. Accuracies are percentages. The file is written
atomically (temporary file + rename), so a reader never sees half a file.
"""
from __future__ import annotations

import hashlib
import json
import os
from typing import Optional

from dassl.utils import write_json

from datasets.protocols import DISTILL_PROTOCOLS

RESULTS_FILENAME = "results.json"
# One part of a zero-shot evaluation (ZeroshotCLIP's test on one class subset), combined below.
ZEROSHOT_PART_FILENAME = "zeroshot.json"


def harmonic_mean(base: float, new: float) -> float:
    """HM = 2 * base * new / (base + new); 0 when both are 0."""
    total = base + new
    return 0.0 if total == 0 else 2.0 * base * new / total


# Keys that name where or with which seed a run happens, not what it does: left out of the hash so
# that the seeds of one configuration share it.
RUN_SPECIFIC_KEYS = ("SEED", "OUTPUT_DIR", "RESUME", "DATASET.ROOT")


def config_hash(cfg) -> str:
    """First 12 hex characters of sha256 of the config printout, without the run-specific keys."""
    cfg = cfg.clone()
    cfg.defrost()
    for key in RUN_SPECIFIC_KEYS:
        node, _, leaf = key.rpartition(".")
        parent = cfg
        for part in filter(None, node.split(".")):
            parent = parent[part]
        parent[leaf] = None
    return hashlib.sha256(str(cfg).encode("utf-8")).hexdigest()[:12]


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


def build_results(cfg, protocol: str, best: dict, last: dict, trainer: Optional[str] = None) -> dict:
    """The results.json dictionary for a finished run described by ``cfg``."""
    if protocol not in DISTILL_PROTOCOLS:
        raise ValueError(f"unknown protocol {protocol!r}; expected one of {DISTILL_PROTOCOLS}")
    return {
        "trainer": trainer or cfg.TRAINER.NAME,
        "dataset": cfg.DATASET.NAME,
        "protocol": protocol,
        "seed": int(cfg.SEED),
        "shots": int(cfg.DATASET.NUM_SHOTS),
        "config_hash": config_hash(cfg),
        "best": best,
        "last": last,
    }


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
