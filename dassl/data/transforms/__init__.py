"""Image transforms (`build_transform`, `INTERPOLATION_MODES`) and which of them are deterministic."""
from .determinism import (DETERMINISTIC_CHOICES, DETERMINISTIC_OPS, random_transform_choices,
                          random_transform_ops, require_deterministic_transforms)
from .transforms import AVAI_CHOICES, INTERPOLATION_MODES, build_transform

__all__ = ["AVAI_CHOICES", "INTERPOLATION_MODES", "build_transform", "DETERMINISTIC_CHOICES",
           "DETERMINISTIC_OPS", "random_transform_choices", "random_transform_ops",
           "require_deterministic_transforms"]
