"""The per-run result file ``<OUTPUT_DIR>/results.json`` (format fixed in ARCHITECTURE.md).

base2novel runs record ``{"epoch", "base", "new", "hm"}`` for the best-on-base checkpoint and for the
last epoch; cross runs record ``{"epoch", "accuracy"}``. Accuracies are percentages. The file is written
atomically (temporary file + rename), so a reader never sees half a file.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from typing import Optional

RESULTS_FILENAME = "results.json"
PROTOCOLS = ("base2novel", "cross")


def harmonic_mean(base: float, new: float) -> float:
    """HM = 2 * base * new / (base + new); 0 when both are 0."""
    total = base + new
    return 0.0 if total == 0 else 2.0 * base * new / total


def config_hash(cfg) -> str:
    """First 12 hex characters of sha256(str(cfg))."""
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
    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown protocol {protocol!r}; expected one of {PROTOCOLS}")
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
    os.makedirs(output_dir, exist_ok=True)
    path = os.path.join(output_dir, RESULTS_FILENAME)
    handle, tmp_path = tempfile.mkstemp(prefix=".results.", suffix=".json.tmp", dir=output_dir)
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as stream:
            json.dump(results, stream, indent=2)
            stream.write("\n")
        os.replace(tmp_path, path)
    except BaseException:
        if os.path.exists(tmp_path):
            os.remove(tmp_path)
        raise
    return path


def read_results(path: str) -> dict:
    """Read a results.json file (or the one inside a run directory)."""
    if os.path.isdir(path):
        path = os.path.join(path, RESULTS_FILENAME)
    with open(path, encoding="utf-8") as stream:
        return json.load(stream)
