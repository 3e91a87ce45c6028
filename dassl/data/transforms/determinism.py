"""Which image transforms are deterministic: the one place every cache that needs it asks.

A cache of per-image results (``DATALOADER.CACHE_IMAGES``, the teacher-feature cache) is exact only
when the transform maps an image to the same tensor at every access. Two views of that question:

- by name, before anything is built: the ``INPUT.TRANSFORMS`` choices (:data:`DETERMINISTIC_CHOICES`);
- by class, for a transform object (a custom one included): its leaf ops (:data:`DETERMINISTIC_OPS`).

Both lists describe the same pipelines: `build_transform` turns each deterministic choice into
deterministic ops only (a test checks this for every implemented choice).
"""
from __future__ import annotations

from typing import Any, List, Optional

from torchvision.transforms import (CenterCrop, Compose, ConvertImageDtype, Grayscale, Normalize, PILToTensor,
                                    Resize, ToTensor)

from dassl.utils.tools import UserError

from .transforms import InstanceNormalization

# INPUT.TRANSFORMS choices that map an image to the same tensor every time; every other choice is random.
DETERMINISTIC_CHOICES = ("normalize", "instance_norm", "center_crop")
# Transform classes that map an image to the same output every time; any other op counts as random.
DETERMINISTIC_OPS = (Resize, CenterCrop, ToTensor, PILToTensor, ConvertImageDtype, Normalize, Grayscale,
                     InstanceNormalization)


def random_transform_choices(cfg_or_choices: Any) -> List[str]:
    """The random entries of ``INPUT.TRANSFORMS``, in their order.

    Takes a config (its ``INPUT.TRANSFORMS``; none when ``INPUT.NO_TRANSFORM``) or a list of choices.
    """
    if isinstance(cfg_or_choices, (list, tuple)):
        choices = cfg_or_choices
    elif cfg_or_choices.INPUT.NO_TRANSFORM:
        return []
    else:
        choices = cfg_or_choices.INPUT.TRANSFORMS
    return [choice for choice in choices if choice not in DETERMINISTIC_CHOICES]


def transform_ops(transform) -> List[object]:
    """The leaf ops of ``transform``, nested `Compose` objects flattened."""
    if isinstance(transform, Compose):
        return [op for step in transform.transforms for op in transform_ops(step)]
    return [transform]


def random_transform_ops(transform) -> List[str]:
    """Class names of the ops of a built ``transform`` that are not known to be deterministic."""
    return [type(op).__name__ for op in transform_ops(transform) if not isinstance(op, DETERMINISTIC_OPS)]


def require_deterministic_transforms(cfg, why_key: str, transform: Optional[object] = None,
                                     loader: str = "training") -> None:
    """Raise a `UserError` when the transform is random, naming ``why_key`` (the key that needs it).

    With ``transform`` (a built transform object) its ops are checked; without it, ``INPUT.TRANSFORMS``
    by name. ``loader`` ("training" / "test") only words the message. ``INPUT.NO_TRANSFORM`` passes.
    """
    if transform is None:
        found = random_transform_choices(cfg)
        where = f"INPUT.TRANSFORMS {list(cfg.INPUT.TRANSFORMS)}"
    else:
        found = random_transform_ops(transform)
        where = f"the {loader} transform (INPUT.TRANSFORMS {list(cfg.INPUT.TRANSFORMS)})"
    if found:
        raise UserError(
            f"{why_key} True needs a deterministic {loader} transform, but {where} has random ops {found}. "
            f"Set INPUT.TRANSFORMS to deterministic ones only (any of {list(DETERMINISTIC_CHOICES)}, "
            f"e.g. ['normalize']) or set {why_key} False.")
