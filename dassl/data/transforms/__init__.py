"""Image transforms (`build_transform`, `INTERPOLATION_MODES`)."""
from .transforms import AVAI_CHOICES, INTERPOLATION_MODES, build_transform

__all__ = ["AVAI_CHOICES", "INTERPOLATION_MODES", "build_transform"]
