"""Prompt-aware OpenAI CLIP (ViT) for prompt learning and distillation.

Public API (see ARCHITECTURE.md): ``available_models``, ``load_state_dict``,
``build_model``, ``load``, ``tokenize``, the ``CLIP`` model, preprocessing
(``image_transform``, ``OPENAI_DATASET_MEAN/STD``), errors, and
``clip.random_weights`` for random test weights. ``from clip import clip``
gives the OpenAI-style module.
"""
from .errors import WeightsChecksumError, WeightsFormatError, WeightsNotFoundError
from .model import CLIP, VisionTransformer, build_model, convert_weights
from .simple_tokenizer import SimpleTokenizer, tokenize
from .transform import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD, image_transform
from .weights import (available_models, load_state_dict, model_filename, read_weights_file,
                      resolve_weights)
from .clip import load

__all__ = [
    "CLIP", "VisionTransformer", "SimpleTokenizer", "WeightsChecksumError", "WeightsFormatError",
    "WeightsNotFoundError", "OPENAI_DATASET_MEAN", "OPENAI_DATASET_STD", "available_models",
    "build_model", "convert_weights", "image_transform", "load", "load_state_dict",
    "model_filename", "read_weights_file", "resolve_weights", "tokenize",
]
