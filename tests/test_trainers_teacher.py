"""Teacher loading from a tiny checkpoint in PromptSRC/PromptKD's layout; paths and error reports."""
import os

import pytest
import torch
import torch.nn.functional as F

import clip
from dassl.config import get_cfg_default
from dassl.utils import UserError
from trainers.config import extend_cfg
from trainers.promptsrc_model import PromptedCLIP, ivlp_design_details
from trainers.teacher import (build_teacher, resolve_teacher_checkpoint, resolve_teacher_weights,
                              teacher_checkpoint_candidates, teacher_design_from_state_dict)

import trainers_tiny_setup as tiny

CLASSNAMES = ["abyssinian", "beagle", "sphynx", "pug", "havanese"]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    folder = tmp_path_factory.mktemp("teacher")
    student_weights, teacher_weights = tiny.write_clip_weights(str(folder / "weights"))
    state = tiny.teacher_state_dict(teacher_weights, CLASSNAMES)
    return {"folder": folder, "teacher_weights": teacher_weights, "state": state}


def _cfg(**keys):
    cfg = extend_cfg(get_cfg_default())
    for dotted, value in keys.items():
        node = cfg
        *path, leaf = dotted.split("__")
        for part in path:
            node = node[part]
        node[leaf] = value
    return cfg


def _teacher_cfg(world, ckpt):
    return _cfg(TRAINER__PROMPTKD__TEACHER_CKPT=ckpt, TRAINER__PROMPTKD__TEACHER_WEIGHTS=world["teacher_weights"])


def test_teacher_loads_original_layout_and_caches_text_features(world, capsys):
    ckpt = tiny.write_teacher_checkpoint(str(world["folder"] / "ok" / "model-best.pth.tar"), world["state"])
    teacher = build_teacher(_teacher_cfg(world, ckpt), CLASSNAMES)
    out = capsys.readouterr().out
    n_zero_shot = sum(k.startswith("prompt_learner.ZS_image_encoder.") for k in world["state"])
    assert n_zero_shot > 0
    assert f"ignored {n_zero_shot} keys of PromptSRC's frozen zero-shot tower" in out
    assert "WARNING" not in out  # nothing else missing or unexpected

    state = world["state"]
    assert torch.equal(teacher.model.prompt_learner.ctx, state["prompt_learner.ctx"])
    assert torch.equal(teacher.model.image_encoder.VPT, state["image_encoder.VPT"])
    # Reference: the same prompted CLIP loaded strictly from the state dict, text features by hand.
    d = tiny.TEACHER_DESIGN
    design = ivlp_design_details(d["n_ctx_vision"], d["n_ctx_text"], d["depth_vision"], d["depth_text"])
    reference = PromptedCLIP(CLASSNAMES, clip.build_model(clip.load_state_dict(world["teacher_weights"]), design),
                             n_ctx_text=d["n_ctx_text"], verbose=False)
    reference.load_state_dict({k: v for k, v in state.items() if "ZS_image_encoder" not in k})
    with torch.no_grad():
        expected = F.normalize(reference.encode_text(), dim=-1)
        image = torch.randn(2, 3, 32, 32)
        expected_logits = reference(image)
    assert teacher.text_features.shape == (5, 48)
    assert torch.allclose(teacher.text_features, expected, atol=1e-5)
    assert torch.allclose(teacher.logits(image), expected_logits, atol=1e-3)
    assert not any(p.requires_grad for p in teacher.parameters())
    teacher.train()
    assert not teacher.model.training


def test_missing_teacher_file_names_expected_paths(tmp_path):
    cfg = _cfg(DATASET__NAME="FGVCAircraft", TRAINER__PROMPTKD__TEACHER_ROOT=str(tmp_path))
    with pytest.raises(UserError) as error:
        resolve_teacher_checkpoint(cfg)
    message = str(error.value)
    assert os.path.join(str(tmp_path), "FGVCAircraft", "VLPromptLearner", "model-best.pth.tar") in message
    assert os.path.join(str(tmp_path), "FGVCaircraft", "VLPromptLearner", "model-best.pth.tar") in message
    assert "TEACHER_CKPT" in message


def test_teacher_paths_follow_promptkd_layout_and_readme_spellings(tmp_path):
    readme = tmp_path / "StandfordCars" / "VLPromptLearner" / "model-best.pth.tar"
    readme.parent.mkdir(parents=True)
    readme.write_bytes(b"x")
    cfg = _cfg(DATASET__NAME="StanfordCars", TRAINER__PROMPTKD__TEACHER_ROOT=str(tmp_path))
    assert resolve_teacher_checkpoint(cfg) == str(readme)
    cross = _cfg(DATASET__NAME="DescribableTextures", TRAINER__MODAL="cross", TRAINER__PROMPTKD__TEACHER_ROOT="tm")
    assert teacher_checkpoint_candidates(cross) == [os.path.join("tm", "ImageNet-xd", "VLPromptLearner_large",
                                                                 "model.pth.tar-20")]
    explicit = _cfg(TRAINER__PROMPTKD__TEACHER_CKPT="/x/teacher.pth")
    assert teacher_checkpoint_candidates(explicit) == ["/x/teacher.pth"]


def test_teacher_weights_name_fix_and_explicit_file():
    assert resolve_teacher_weights(_cfg(TRAINER__PROMPTKD__TEACHER_NAME="ViT/L-14")) == "ViT-L/14"
    assert resolve_teacher_weights(_cfg(TRAINER__PROMPTKD__TEACHER_WEIGHTS="/w/L.pt")) == "/w/L.pt"


@pytest.mark.parametrize("removed", [
    "prompt_learner.ctx",
    "image_encoder.VPT",
    "image_encoder.transformer.resblocks.1.VPT_shallow",
    "text_encoder.transformer.resblocks.1.VPT_shallow",
])
def test_checkpoint_missing_prompt_tensor_stops(world, removed):
    state = {k: v for k, v in world["state"].items() if k != removed}
    with pytest.raises(UserError, match="lacks prompt tensors"):
        teacher_design_from_state_dict(state, "ckpt")
    ckpt = tiny.write_teacher_checkpoint(str(world["folder"] / "broken" / "model.pth"), state)
    with pytest.raises(UserError, match="lacks prompt tensors"):
        build_teacher(_teacher_cfg(world, ckpt), CLASSNAMES)


def test_design_is_read_from_checkpoint(world):
    assert teacher_design_from_state_dict(world["state"]) == tiny.TEACHER_DESIGN


def test_missing_and_unexpected_keys_are_reported(world, capsys):
    state = dict(world["state"])
    state["prompt_learner.extra_thing"] = torch.zeros(1)
    removed = state.pop("text_encoder.ln_final.weight")
    ckpt = tiny.write_teacher_checkpoint(str(world["folder"] / "odd" / "model.pth"), state)
    teacher = build_teacher(_teacher_cfg(world, ckpt), CLASSNAMES)
    out = capsys.readouterr().out
    assert "unexpected keys ignored (1): ['prompt_learner.extra_thing']" in out
    assert "missing from the checkpoint" in out and "text_encoder.ln_final.weight" in out
    assert teacher.model.text_encoder.ln_final.weight.shape == removed.shape


def test_teacher_weights_are_bit_identical_to_copy_then_load(world):
    """The teacher takes the loaded CLIP tensors instead of copying them (one copy of the weights in
    memory while it is built); its weights and text features are exactly those of building a copy of the
    CLIP weights and loading the checkpoint over it. The checkpoint's tower weights differ from the CLIP
    file here, and one is missing (kept from the CLIP file), so both sources are checked."""
    generator = torch.Generator().manual_seed(7)
    state = {k: (v + 0.01 * torch.randn(v.shape, generator=generator)
                 if k.startswith(("image_encoder.", "text_encoder.")) and v.is_floating_point() else v)
             for k, v in world["state"].items()}
    kept_from_clip = state.pop("image_encoder.ln_post.weight")
    ckpt = tiny.write_teacher_checkpoint(str(world["folder"] / "exact" / "model-best.pth.tar"), state)
    teacher = build_teacher(_teacher_cfg(world, ckpt), CLASSNAMES, verbose=False)

    d = tiny.TEACHER_DESIGN
    design = ivlp_design_details(d["n_ctx_vision"], d["n_ctx_text"], d["depth_vision"], d["depth_text"])
    clip_state = clip.load_state_dict(world["teacher_weights"])
    reference = PromptedCLIP(CLASSNAMES, clip.build_model(clip_state, design), n_ctx_text=d["n_ctx_text"],
                             verbose=False)
    reference.load_state_dict({k: v for k, v in state.items() if "ZS_image_encoder" not in k}, strict=False)
    expected, actual = reference.state_dict(), teacher.model.state_dict()
    assert list(actual) == list(expected)
    for key, value in expected.items():
        assert actual[key].dtype == value.dtype and torch.equal(actual[key], value), key
    assert torch.equal(actual["image_encoder.ln_post.weight"], clip_state["visual.ln_post.weight"])
    assert not torch.equal(actual["image_encoder.ln_post.weight"], kept_from_clip)  # really from the CLIP file
    assert not torch.equal(actual["image_encoder.conv1.weight"], clip_state["visual.conv1.weight"])
    with torch.no_grad():
        expected_features = F.normalize(reference.encode_text().float(), dim=-1)
    assert torch.equal(teacher.text_features, expected_features)
