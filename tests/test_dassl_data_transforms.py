"""Which transforms are deterministic: by INPUT.TRANSFORMS name and by built op, and the error that names the key."""
from __future__ import annotations

import pytest
import torch
from PIL import Image

from dassl.config import get_cfg_default
from dassl.data.transforms import (DETERMINISTIC_CHOICES, build_transform, random_transform_choices,
                                   random_transform_ops, require_deterministic_transforms)
from dassl.data.transforms.transforms import IMPLEMENTED_CHOICES
from dassl.utils import UserError


def cfg_with(choices, **extra):
    cfg = get_cfg_default()
    cfg.INPUT.SIZE = (8, 8)
    cfg.INPUT.TRANSFORMS = tuple(choices)
    for key, value in extra.items():
        setattr(cfg.INPUT, key, value)
    return cfg


@pytest.mark.parametrize("choice", IMPLEMENTED_CHOICES)
def test_names_and_built_ops_agree(choice):
    """A choice counts as deterministic by name exactly when the training pipeline it builds has no random op."""
    built = build_transform(cfg_with([choice]), is_train=True)
    by_name = random_transform_choices([choice])
    by_ops = random_transform_ops(built)
    assert bool(by_name) == bool(by_ops)
    assert (choice in DETERMINISTIC_CHOICES) == (not by_ops)
    assert not random_transform_ops(build_transform(cfg_with([choice]), is_train=False))


@pytest.mark.parametrize("choice", DETERMINISTIC_CHOICES)
def test_deterministic_choices_give_the_same_tensor_every_time(choice):
    image = Image.frombytes("RGB", (13, 11), bytes(range(256)) * 2)
    tfm = build_transform(cfg_with([choice]), is_train=True)
    torch.manual_seed(0)
    first = tfm(image)
    torch.manual_seed(1)
    assert torch.equal(first, tfm(image))


def test_random_choices_from_cfg_or_list_keep_order():
    choices = ["random_flip", "normalize", "random_resized_crop", "center_crop"]
    assert random_transform_choices(choices) == ["random_flip", "random_resized_crop"]
    assert random_transform_choices(cfg_with(choices)) == ["random_flip", "random_resized_crop"]
    assert random_transform_choices(cfg_with(choices, NO_TRANSFORM=True)) == []


def test_require_names_the_key_and_the_random_ops():
    cfg = cfg_with(["random_resized_crop", "normalize", "random_flip"])
    with pytest.raises(UserError) as info:
        require_deterministic_transforms(cfg, "SOME.CACHE_KEY")
    message = str(info.value)
    assert message.startswith("SOME.CACHE_KEY True needs a deterministic training transform")
    assert "random ops ['random_resized_crop', 'random_flip']" in message
    assert "set SOME.CACHE_KEY False" in message and "'normalize'" in message
    require_deterministic_transforms(cfg_with(["normalize", "center_crop"]), "SOME.CACHE_KEY")
    require_deterministic_transforms(cfg_with(["random_flip"], NO_TRANSFORM=True), "SOME.CACHE_KEY")


def test_require_checks_a_built_transform_by_its_ops():
    cfg = cfg_with(["normalize"])
    random_tfm = build_transform(cfg_with(["random_crop", "random_flip"]), is_train=True)
    with pytest.raises(UserError, match=r"deterministic test transform, but the test transform .* "
                                        r"random ops \['RandomCrop', 'RandomHorizontalFlip'\]"):
        require_deterministic_transforms(cfg, "OTHER.KEY", transform=random_tfm, loader="test")
    require_deterministic_transforms(cfg, "OTHER.KEY", transform=build_transform(cfg, is_train=True))
