"""`build_transform`: the train / test image pipelines of Dassl (same choice names, same order of ops).

Only the choices these prompt-learning codebases use are implemented (`random_resized_crop`,
`random_flip`, `normalize`) plus the simple ones (`random_crop`, `instance_norm`); the other
names Dassl accepts raise a clear `NotImplementedError`.
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch
from torchvision.transforms import (CenterCrop, Compose, InterpolationMode, Normalize, RandomCrop,
                                    RandomHorizontalFlip, RandomResizedCrop, Resize, ToTensor)

INTERPOLATION_MODES = {
    "bilinear": InterpolationMode.BILINEAR,
    "bicubic": InterpolationMode.BICUBIC,
    "nearest": InterpolationMode.NEAREST,
}

AVAI_CHOICES = [
    "random_flip", "random_resized_crop", "normalize", "instance_norm", "random_crop",
    "random_translation", "center_crop", "cutout", "imagenet_policy", "cifar10_policy",
    "svhn_policy", "randaugment", "randaugment_fixmatch", "randaugment2", "gaussian_noise",
    "colorjitter", "randomgrayscale", "gaussian_blur",
]
IMPLEMENTED_CHOICES = ["random_flip", "random_resized_crop", "normalize", "instance_norm",
                       "random_crop", "center_crop"]


class InstanceNormalization:
    """Normalise each image tensor by its own per-channel mean and std."""

    def __init__(self, eps: float = 1e-8):
        self.eps = eps

    def __call__(self, img: torch.Tensor) -> torch.Tensor:
        flat = img.reshape(img.shape[0], -1)
        mean = flat.mean(dim=1).view(-1, 1, 1)
        std = flat.std(dim=1).view(-1, 1, 1)
        return (img - mean) / (std + self.eps)

    def __repr__(self) -> str:  # stable text: DATALOADER.CACHE_IMAGES keys images by the transform's repr
        return f"{type(self).__name__}(eps={self.eps})"


def _interpolation(cfg):
    name = cfg.INPUT.INTERPOLATION
    if name not in INTERPOLATION_MODES:
        raise ValueError(f"INPUT.INTERPOLATION must be one of {list(INTERPOLATION_MODES)}, got {name!r}")
    return INTERPOLATION_MODES[name]


def _check_choices(choices: Sequence[str]) -> None:
    for choice in choices:
        if choice not in AVAI_CHOICES:
            raise ValueError(f"Unknown INPUT.TRANSFORMS entry {choice!r}; expected one of {AVAI_CHOICES}")
        if choice not in IMPLEMENTED_CHOICES:
            raise NotImplementedError(
                f"INPUT.TRANSFORMS entry {choice!r} is a Dassl choice this engine does not implement; "
                f"implemented: {IMPLEMENTED_CHOICES}")


def build_transform(cfg, is_train: bool = True, choices: Optional[Sequence[str]] = None):
    """Return the train or test `Compose` for ``cfg.INPUT`` (None when ``INPUT.NO_TRANSFORM``)."""
    if cfg.INPUT.NO_TRANSFORM:
        print("Note: no transform is applied!")
        return None
    if choices is None:
        choices = cfg.INPUT.TRANSFORMS
    _check_choices(choices)

    if len(cfg.INPUT.PIXEL_MEAN) != 3 or len(cfg.INPUT.PIXEL_STD) != 3:
        raise ValueError("INPUT.PIXEL_MEAN and INPUT.PIXEL_STD must have 3 values each, got "
                         f"{cfg.INPUT.PIXEL_MEAN} and {cfg.INPUT.PIXEL_STD}")
    normalize = Normalize(mean=cfg.INPUT.PIXEL_MEAN, std=cfg.INPUT.PIXEL_STD)
    if is_train:
        return _build_train(cfg, choices, normalize)
    return _build_test(cfg, choices, normalize)


def _input_size(cfg):
    size = tuple(cfg.INPUT.SIZE)
    if len(size) != 2:
        raise ValueError(f"INPUT.SIZE must be (height, width), got {cfg.INPUT.SIZE}")
    return size


def _build_train(cfg, choices, normalize) -> Compose:
    print("Building transform_train")
    size = _input_size(cfg)
    interp = _interpolation(cfg)
    steps = []

    if "random_crop" not in choices and "random_resized_crop" not in choices:
        print(f"+ resize to {size[0]}x{size[1]}")
        steps.append(Resize(size, interpolation=interp))
    if "random_crop" in choices:
        padding = cfg.INPUT.CROP_PADDING
        print(f"+ random crop (padding = {padding})")
        steps.append(RandomCrop(size, padding=padding))
    if "random_resized_crop" in choices:
        scale = tuple(cfg.INPUT.RRCROP_SCALE)
        print(f"+ random resized crop (size={size}, scale={scale})")
        steps.append(RandomResizedCrop(size, scale=scale, interpolation=interp))
    if "center_crop" in choices:
        print(f"+ {size[0]}x{size[1]} center crop")
        steps.append(CenterCrop(size))
    if "random_flip" in choices:
        print("+ random flip")
        steps.append(RandomHorizontalFlip())

    print("+ to torch tensor of range [0, 1]")
    steps.append(ToTensor())
    if "normalize" in choices:
        print(f"+ normalization (mean={cfg.INPUT.PIXEL_MEAN}, std={cfg.INPUT.PIXEL_STD})")
        steps.append(normalize)
    if "instance_norm" in choices:
        print("+ instance normalization")
        steps.append(InstanceNormalization())
    return Compose(steps)


def _build_test(cfg, choices, normalize) -> Compose:
    print("Building transform_test")
    size = _input_size(cfg)
    interp = _interpolation(cfg)
    print(f"+ resize the smaller edge to {max(size)}")
    print(f"+ {size[0]}x{size[1]} center crop")
    steps = [Resize(max(size), interpolation=interp), CenterCrop(size)]
    print("+ to torch tensor of range [0, 1]")
    steps.append(ToTensor())
    if "normalize" in choices:
        print(f"+ normalization (mean={cfg.INPUT.PIXEL_MEAN}, std={cfg.INPUT.PIXEL_STD})")
        steps.append(normalize)
    if "instance_norm" in choices:
        print("+ instance normalization")
        steps.append(InstanceNormalization())
    return Compose(steps)
