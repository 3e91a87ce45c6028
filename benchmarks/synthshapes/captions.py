"""Captions for contrastive pretraining and the class names of the downstream datasets.

Captions vary in wording and in which attributes they mention, so that the downstream prompt
"a photo of a red triangle." (colour + shape, no size) is in-distribution for the text encoder.
"""
from __future__ import annotations

import itertools

from benchmarks.synthshapes.world import COLOR_NAMES, SHAPES, SIZES

CAPTION_TEMPLATES = (
    "a photo of a {size} {color} {shape}.",
    "a photo of a {color} {shape}.",
    "a {size} {color} {shape}.",
    "a {color} {shape}.",
    "a picture of a {color} {shape}.",
    "a drawing of a {size} {color} {shape}.",
)
# Every template ends in "{color} {shape}.": with templates that moved the shape word ("the {shape} is
# {color}.", "... on a background.") the tiny text towers took far longer to pick up shape words.
ZERO_SHOT_TEMPLATE = "a photo of a {}."


TEMPLATE_MENTIONS_SIZE = tuple("{size}" in t for t in CAPTION_TEMPLATES)


def class_name(color: str, shape: str) -> str:
    """Downstream class name, read naturally in a prompt: 'red triangle'."""
    return f"{color} {shape}"


def all_captions() -> list[tuple[int, int, int, int, str]]:
    """Every (template, shape, colour, size, text) combination, in a fixed order."""
    rows = []
    for t, (s, c, z) in itertools.product(range(len(CAPTION_TEMPLATES)),
                                           itertools.product(range(len(SHAPES)), range(len(COLOR_NAMES)),
                                                             range(len(SIZES)))):
        text = CAPTION_TEMPLATES[t].format(size=SIZES[z], color=COLOR_NAMES[c], shape=SHAPES[s])
        rows.append((t, s, c, z, text))
    return rows


def caption_index(template: int, shape: int, color: int, size: int) -> int:
    """Row of `all_captions()` for these indices (works element-wise on tensors too)."""
    return ((template * len(SHAPES) + shape) * len(COLOR_NAMES) + color) * len(SIZES) + size


def zero_shot_classes() -> list[str]:
    """The 100 colour x shape class names used for the 100-way zero-shot check of pretraining."""
    return [class_name(c, s) for s in SHAPES for c in COLOR_NAMES]
