"""CLIP image preprocessing: OpenAI's normalisation constants and its test-time transform.

The same pipeline as the engine's test transform in the prompt-learning configs (bicubic resize of
the shorter side, centre crop, RGB, tensor, normalise), so zero-shot features match either way.
"""
from __future__ import annotations

from typing import Tuple

OPENAI_DATASET_MEAN: Tuple[float, float, float] = (0.48145466, 0.4578275, 0.40821073)
OPENAI_DATASET_STD: Tuple[float, float, float] = (0.26862954, 0.26130258, 0.27577711)


def _to_rgb(image):
    return image.convert("RGB")


def image_transform(n_px: int):
    """Resize the shorter side to ``n_px`` (bicubic), center-crop, RGB, to tensor, normalise."""
    from torchvision.transforms import (CenterCrop, Compose, InterpolationMode, Normalize,
                                        Resize, ToTensor)

    return Compose([
        Resize(n_px, interpolation=InterpolationMode.BICUBIC),
        CenterCrop(n_px),
        _to_rgb,
        ToTensor(),
        Normalize(OPENAI_DATASET_MEAN, OPENAI_DATASET_STD),
    ])

