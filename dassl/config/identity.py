"""The identity of a configuration: what a run computes, independent of where and with which seed.

Two runs whose configs differ only in the run-specific keys (seed, output / resume folders, dataset
root and cache folders) or in keys that only change how a run reports (print frequency, checkpoint
frequency, verbosity, per-class result printouts) compute the same thing, so they share an identity. The identity has two forms:

- `config_hash(cfg)`: 12 hex characters, written into results.json and into every checkpoint;
- `config_items(cfg)`: the flattened ``KEY -> repr(value)`` table behind it, also stored in
  checkpoints, so that a refusal can name the keys that differ (`differing_keys`,
  `describe_differences`).

The hash is the sha256 of the config printout (yacs' ``str(cfg)``) with the run-specific keys set to
None. Adding a config key changes every printout, and with it every hash: a comparison that must work
across code versions uses the items, which name what differs.
"""
from __future__ import annotations

import hashlib
from typing import Any, Dict, List, Mapping

__all__ = [
    "RUN_SPECIFIC_KEYS",
    "config_hash",
    "config_items",
    "differing_keys",
    "describe_differences",
]

# Keys that name where or with which seed a run happens, or only how it reports, not what it computes:
# left out of the identity so that the seeds of one configuration (and a moved dataset folder, a changed
# print frequency) share it.
RUN_SPECIFIC_KEYS = ("SEED", "OUTPUT_DIR", "RESUME", "DATASET.ROOT", "DATASET.FEWSHOT_CACHE_DIR", "VERBOSE",
                     "TRAIN.PRINT_FREQ", "TRAIN.CHECKPOINT_FREQ", "TEST.PER_CLASS_RESULT", "TEST.COMPUTE_CMAT")


def config_hash(cfg: Any) -> str:
    """First 12 hex characters of sha256 of the config printout, without the run-specific keys."""
    cfg = cfg.clone()
    cfg.defrost()
    for key in RUN_SPECIFIC_KEYS:
        node, _, leaf = key.rpartition(".")
        parent = cfg
        for part in filter(None, node.split(".")):
            parent = parent[part]
        if leaf in parent:
            parent[leaf] = None
    return hashlib.sha256(str(cfg).encode("utf-8")).hexdigest()[:12]


def _flatten(node: Mapping, prefix: str, out: Dict[str, str]) -> None:
    for key in sorted(node.keys(), key=str):
        value = node[key]
        full_key = f"{prefix}{key}"
        if isinstance(value, Mapping):
            _flatten(value, full_key + ".", out)
        else:
            out[full_key] = repr(value)


def config_items(cfg: Any) -> Dict[str, str]:
    """Every leaf key of `cfg` (``A.B.C``) mapped to ``repr`` of its value, run-specific keys left out.

    Plain strings, so the table can be stored in a checkpoint that loads with ``weights_only=True``.
    """
    items: Dict[str, str] = {}
    _flatten(cfg, "", items)
    for key in RUN_SPECIFIC_KEYS:
        items.pop(key, None)
    return items


def differing_keys(a_items: Mapping[str, str], b_items: Mapping[str, str]) -> List[str]:
    """Sorted keys whose values differ, including keys present in only one of the tables."""
    return sorted(key for key in set(a_items) | set(b_items) if a_items.get(key) != b_items.get(key))


def describe_differences(saved_items: Mapping[str, str], current_items: Mapping[str, str],
                         limit: int = 5, saved_name: str = "checkpoint") -> str:
    """One line naming up to `limit` differing keys with both values, then "and N more".

    Example: ``TRAINER.PROMPTKD.KD_WEIGHT (checkpoint 1000.0, now 200.0) and 2 more``.
    """
    keys = differing_keys(saved_items, current_items)
    shown = []
    for key in keys[:limit]:
        saved = saved_items.get(key, "absent")
        current = current_items.get(key, "absent")
        shown.append(f"{key} ({saved_name} {saved}, now {current})")
    text = ", ".join(shown)
    if len(keys) > limit:
        text += f" and {len(keys) - limit} more"
    return text
