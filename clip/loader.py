"""One call from a model name or weights file to a ready model and its preprocessing."""
from __future__ import annotations

import os
from typing import Callable, Mapping, Optional, Tuple, Union

import torch

from .model import CLIP, build_model
from .transform import image_transform
from .weights import load_state_dict

__all__ = ["load"]


def load(name_or_path: Union[str, os.PathLike], device: Union[str, torch.device] = "cpu",
         design_details: Optional[Mapping] = None, *, download_root: Optional[str] = None,
         download: bool = True) -> Tuple[CLIP, Callable]:
    """Build a CLIP from a model name (``"ViT-B/16"``) or a weights file; returns ``(model, preprocess)``.

    The weights are found as :func:`clip.load_state_dict` finds them. ``design_details`` adds deep
    prompts (see :func:`clip.model.prompt_settings`) and is passed on to the builder, so prompted
    models load this way too ("CLIP: load ignores design_details" in docs/compatibility.md). The
    model is float32 and in eval mode; ``preprocess`` is the test-time image transform at the
    model's input resolution.
    """
    state_dict = load_state_dict(name_or_path, download=download, download_root=download_root)
    model = build_model(state_dict, design_details).to(device)
    return model, image_transform(model.visual.input_resolution)
