"""Evaluator registry and builder (``cfg.TEST.EVALUATOR``)."""
from __future__ import annotations

from typing import Any

from dassl.utils.registry import Registry
from dassl.utils.tools import check_availability

__all__ = ["EVALUATOR_REGISTRY", "build_evaluator"]

EVALUATOR_REGISTRY = Registry("EVALUATOR")


def build_evaluator(cfg: Any, **kwargs: Any) -> Any:
    """Instantiate the evaluator named by ``cfg.TEST.EVALUATOR`` with ``(cfg, **kwargs)``."""
    name = cfg.TEST.EVALUATOR
    check_availability(name, EVALUATOR_REGISTRY.registered_names())
    if cfg.VERBOSE:
        print(f"Loading evaluator: {name}")
    return EVALUATOR_REGISTRY.get(name)(cfg, **kwargs)
