"""`TRAINER_REGISTRY` and `build_trainer(cfg)`."""
from __future__ import annotations

from dassl.utils.registry import Registry
from dassl.utils.tools import check_availability

TRAINER_REGISTRY = Registry("TRAINER")


def build_trainer(cfg):
    """Instantiate the trainer named by ``cfg.TRAINER.NAME``; an unknown name lists the registered ones."""
    check_availability(cfg.TRAINER.NAME, TRAINER_REGISTRY.registered_names())
    if cfg.VERBOSE:
        print(f"Loading trainer: {cfg.TRAINER.NAME}")
    return TRAINER_REGISTRY.get(cfg.TRAINER.NAME)(cfg)
