"""trainers/backbone.py: weights found or one clear error, the input-size check, freezing by a rule."""
from types import SimpleNamespace

import pytest
import torch

from clip.random_weights import preset_state_dict
from dassl.utils import UserError
from trainers.backbone import (NO_PROMPTS, backbone_source, check_input_size, freeze, load_backbone,
                               load_clip_state_dict)
from trainers.config import default_config


def _cfg(weights="", name="", size=32):
    cfg = default_config()
    cfg.MODEL.BACKBONE.WEIGHTS = weights
    cfg.MODEL.BACKBONE.NAME = name
    cfg.INPUT.SIZE = (size, size)
    return cfg


def test_missing_weights_file_names_the_config_keys(tmp_path):
    missing = str(tmp_path / "nope.pt")
    with pytest.raises(UserError) as info:
        load_clip_state_dict(missing, "MODEL.BACKBONE.WEIGHTS / MODEL.BACKBONE.NAME")
    assert "MODEL.BACKBONE.WEIGHTS / MODEL.BACKBONE.NAME" in str(info.value) and missing in str(info.value)
    with pytest.raises(UserError, match="Set MODEL.BACKBONE.NAME"):
        backbone_source(_cfg())


def test_unreadable_weights_file_is_a_user_error(tmp_path):
    broken = tmp_path / "broken.pt"
    broken.write_bytes(b"not a checkpoint")
    with pytest.raises(UserError, match="Cannot load CLIP weights"):
        load_clip_state_dict(str(broken), "TRAINER.PROMPTKD.TEACHER_WEIGHTS")


def test_load_backbone_builds_a_plain_clip_and_checks_the_input_size(tmp_path, capsys):
    path = tmp_path / "tiny.pt"
    torch.save(preset_state_dict("tiny", seed=1), path)
    cfg = _cfg(weights=str(path), name="ViT-B/16")
    model = load_backbone(cfg, NO_PROMPTS)
    assert f"Loading CLIP (backbone: ViT-B/16, weights: {path})" in capsys.readouterr().out
    assert not hasattr(model.visual, "VPT")  # no prompt tokens
    check_input_size(cfg, model.visual, "student")
    with pytest.raises(UserError, match=r"set INPUT.SIZE \(32, 32\)"):
        check_input_size(_cfg(size=224), model.visual, "student")


def test_freeze_trains_exactly_the_names_the_rule_accepts(capsys):
    model = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Linear(2, 1))
    trainable = freeze(model, lambda name: name.startswith("1."))
    assert trainable == ["1.bias", "1.weight"]
    assert [p.requires_grad for p in model.parameters()] == [False, False, True, True]
    out = capsys.readouterr().out
    assert "Parameters count: 2" in out and "1.weight" in out


def test_check_input_size_reads_the_encoder_resolution():
    with pytest.raises(UserError, match="teacher CLIP's input resolution 64"):
        check_input_size(_cfg(size=32), SimpleNamespace(input_resolution=64), "teacher")
