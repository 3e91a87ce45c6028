"""Simple / Simple_RSM: frozen prompt-free CLIP image tower + learnable projector, same teacher and KD."""
import json

import pytest
import torch

import datasets  # noqa: F401  (registers the readers)
import trainers  # noqa: F401  (registers the trainers)
from dassl.engine import build_trainer
from dassl.utils import set_random_seed

import trainers_tiny_setup as tiny

PROJECTOR = {f"VPT_image_trans.conv1.{i}.{kind}" for i in (0, 1, 3) for kind in ("weight", "bias")}
RSM = {f"rsm.phi_{branch}.{i}.{kind}" for branch in "vw" for i in (0, 2) for kind in ("weight", "bias")}


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return tiny.make_world(tmp_path_factory.mktemp("simple"))


def _build(world, name, output_dir, opts=()):
    cfg = tiny.make_cfg(world["root"], name, str(output_dir), world["weights"], world["teacher_root"],
                        opts=list(opts))
    set_random_seed(cfg.SEED)
    return build_trainer(cfg)


def test_simple_trains_only_the_projector(world, tmp_path):
    trainer = _build(world, "Simple", tmp_path / "simple")
    assert not any("VPT" in name for name, _ in trainer.student.image_encoder.named_parameters())
    assert {n for n, p in trainer.student.named_parameters() if p.requires_grad} == PROJECTOR
    assert trainer.student.VPT_image_trans.conv1[0].in_channels == 32  # tiny student embed dim
    assert trainer.student.VPT_image_trans.conv1[3].out_channels == trainer.text_features.shape[1]


def test_simple_rsm_trains_projector_and_rsm_and_keeps_backbone_frozen(world, tmp_path):
    trainer = _build(world, "Simple_RSM", tmp_path / "simple_rsm")
    assert {n for n, p in trainer.student.named_parameters() if p.requires_grad} == PROJECTOR | RSM
    before = {k: v.clone() for k, v in trainer.student.state_dict().items()}
    summaries = []
    step = trainer.forward_backward
    trainer.forward_backward = lambda batch: summaries.append(step(batch)) or summaries[-1]
    trainer.train()
    after = trainer.student.state_dict()
    for key, value in before.items():
        if key.startswith("image_encoder.") or key == "logit_scale":
            assert torch.equal(value, after[key]), key
    assert not torch.equal(before["VPT_image_trans.conv1.0.weight"], after["VPT_image_trans.conv1.0.weight"])
    assert not torch.equal(before["rsm.phi_w.0.weight"], after["rsm.phi_w.0.weight"])
    assert set(summaries[0]) == {"loss", "kd", "rsm", "H", "max_p"}
    results = json.loads((tmp_path / "simple_rsm" / "results.json").read_text())
    assert results["trainer"] == "Simple_RSM" and set(results["best"]) == {"epoch", "base", "new", "hm"}


@pytest.mark.parametrize("trainer", ["PromptKD", "PromptKD_RSM", "Simple", "Simple_RSM"])
def test_trainer_configs_merge_with_project_keys(trainer):
    import os

    from dassl.config import get_cfg_default
    from trainers.config import extend_cfg

    folder = os.path.join("configs", "trainers", trainer)
    names = ["vit_b16_c2_ep20_batch8_4+4ctx.yaml", "vit_b16_c2_ep20_batch8_4+4ctx_cross_datasets.yaml"]
    files = [os.path.join(folder, name) for name in names]  # base-to-new and cross-dataset
    assert all(os.path.isfile(path) for path in files)
    for path in files:
        cfg = extend_cfg(get_cfg_default())
        cfg.merge_from_file(path)
        assert cfg.TRAINER.PROMPTKD.TEACHER_NAME == "ViT-L/14" and cfg.OPTIM.MAX_EPOCH == 20
        assert cfg.TRAINER.RSM.WEIGHT == 50.0 and cfg.TRAINER.RSM.DIM == 64
        assert cfg.MODEL.BACKBONE.WEIGHTS == "" and cfg.TRAINER.PROMPTKD.TEACHER_ROOT == "./teacher_model"
        if trainer.startswith("PromptKD"):
            assert cfg.TRAINER.PROMPTKD.PROMPT_DEPTH_VISION == (3 if "cross" in path else 9)
