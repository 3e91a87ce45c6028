"""Prompt-aware OpenAI CLIP (ViT) for prompt learning and distillation.

Public API (see ARCHITECTURE.md): ``available_models``, ``load_state_dict``, ``build_model``,
``load``, ``tokenize``, the ``CLIP`` model, preprocessing (``image_transform``,
``OPENAI_DATASET_MEAN/STD``), the weight errors, and ``clip.random_weights`` for random test
weights. The package depends on no other package of this repository.
"""
from .errors import WeightsChecksumError, WeightsFormatError, WeightsNotFoundError
from .loader import load
from .model import CLIP, VisionTransformer, build_model
from .simple_tokenizer import SimpleTokenizer, tokenize
from .transform import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD, image_transform
from .weights import (available_models, load_state_dict, model_filename, read_weights_file,
                      resolve_weights)

__all__ = [
    "CLIP", "VisionTransformer", "SimpleTokenizer", "WeightsChecksumError", "WeightsFormatError",
    "WeightsNotFoundError", "OPENAI_DATASET_MEAN", "OPENAI_DATASET_STD", "available_models",
    "build_model", "image_transform", "load", "load_state_dict", "model_filename",
    "read_weights_file", "resolve_weights", "tokenize",
]
