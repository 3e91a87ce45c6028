"""The module prompt-learning code imports as ``from clip import clip``.

Same names as OpenAI's ``clip/clip.py`` (``_MODELS``, ``_download``,
``available_models``, ``load``, ``tokenize``, ``build_model``) on top of our
model, weight loader and tokenizer.

**[quirk] fixed**: the prompt forks' ``load`` ignores ``design_details``; ours
passes it to ``build_model``. ``load`` returns ``(model, preprocess)`` like
OpenAI's, with a float32 model in eval mode (no ``jit`` variant).
"""
from __future__ import annotations

import os
from typing import Callable, Mapping, Optional, Tuple, Union

import torch

from .model import CLIP, build_model
from .simple_tokenizer import tokenize
from .transform import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD, _transform, image_transform
from .weights import (_MODELS, SUPPORTED_MODELS, _download, available_models, load_state_dict,
                      model_filename, read_weights_file, resolve_weights)

__all__ = ["available_models", "load", "load_state_dict", "tokenize", "build_model",
           "image_transform", "_MODELS", "_download", "_transform"]


def load(name_or_path: Union[str, os.PathLike], device: Union[str, torch.device] = "cpu",
         design_details: Optional[Mapping] = None, jit: bool = False,
         download_root: Optional[str] = None,
         download: bool = True) -> Tuple[CLIP, Callable]:
    """Build a CLIP from a model name or weights file; returns ``(model, preprocess)``.

    ``design_details`` adds deep prompts (``clip.md`` §9). ``jit=True`` (the
    TorchScript model of OpenAI's loader) is not supported.
    """
    if jit:
        raise ValueError("clip.load(jit=True) is not supported: this package builds an eager model")
    state_dict = load_state_dict(name_or_path, download=download, download_root=download_root)
    model = build_model(state_dict, design_details).to(device)
    return model, image_transform(model.visual.input_resolution)
