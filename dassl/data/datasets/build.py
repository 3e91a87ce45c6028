"""`DATASET_REGISTRY` and `build_dataset(cfg, protocol=None)`."""
from __future__ import annotations

from typing import Optional

from dassl.utils.registry import Registry
from dassl.utils.tools import check_availability

DATASET_REGISTRY = Registry("DATASET")


def build_dataset(cfg, protocol: Optional[str] = None):
    """Build the reader named by ``cfg.DATASET.NAME``.

    `protocol` is None for CoOp semantics (the reader is called as ``cls(cfg)``) or the
    distillation protocol string (``"base2novel"`` / ``"base_only"`` / ``"cross"``), passed as ``protocol=``.
    An unknown name raises ValueError listing the registered names.
    """
    avai_datasets = DATASET_REGISTRY.registered_names()
    check_availability(cfg.DATASET.NAME, avai_datasets)
    if cfg.VERBOSE:
        print(f"Loading dataset: {cfg.DATASET.NAME}")
    dataset_cls = DATASET_REGISTRY.get(cfg.DATASET.NAME)
    if protocol is None:
        return dataset_cls(cfg)
    return dataset_cls(cfg, protocol=protocol)
