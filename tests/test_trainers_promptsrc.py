"""PromptSRC teacher training: GPA weights, loss terms, and a tiny run whose checkpoint the
distillation teacher loader accepts."""
import os

import pytest
import torch
import torch.nn.functional as F

from trainers.promptsrc import PromptSRCCLIP, gaussian_weights, template_text_features


def test_gaussian_weights_match_promptsrc_table():
    w = gaussian_weights(20, 15, 1)
    assert sum(w) == pytest.approx(1.0)
    # GPA weights for mean 15, std 1, 20 epochs (1-based epochs)
    for epoch, value in {13: 0.0540, 14: 0.2420, 15: 0.3989, 16: 0.2420, 12: 0.0044}.items():
        assert w[epoch - 1] == pytest.approx(value, abs=1e-4)
    assert gaussian_weights(1, 15, 1) == [1.0]  # far from the mean: no underflow to 0/0
    with pytest.raises(ValueError):
        gaussian_weights(3, 1, 0)


@pytest.fixture(scope="module")
def tiny_model():
    from clip.random_weights import preset_state_dict
    torch.manual_seed(0)
    state = preset_state_dict("tiny", seed=3)
    model = PromptSRCCLIP(["red cube", "blue_ball", "green cone"], state, n_ctx_text=4, n_ctx_vision=2,
                          depth_text=2, depth_vision=2, ctx_init="a photo of a")
    return model, state


def test_model_layout_and_fixed_embeddings(tiny_model):
    import clip
    model, state = tiny_model
    keys = model.state_dict().keys()
    assert "prompt_learner.ctx" in keys and "image_encoder.VPT" in keys
    assert "text_encoder.transformer.resblocks.1.VPT_shallow" in keys
    assert any(k.startswith("prompt_learner.ZS_image_encoder.") for k in keys)
    assert "fixed_embeddings" not in keys  # PromptSRC keeps it as a plain attribute
    plain = clip.build_model(state).eval()
    ref = template_text_features(plain, ["red cube", "blue ball", "green cone"], ["a photo of a {}.", "a {}."])
    tokens = clip.tokenize(["a photo of a red cube.", "a red cube."], context_length=plain.context_length)
    with torch.no_grad():
        by_hand = plain.encode_text(tokens).mean(0)
    assert torch.allclose(ref[0], by_hand, atol=1e-5)
    assert model.fixed_embeddings.shape == (3, plain.text_projection.shape[1])


def test_loss_terms_by_hand(tiny_model):
    model, _ = tiny_model
    model.train()
    torch.manual_seed(1)
    image, label = torch.randn(2, 3, 32, 32), torch.tensor([0, 2])
    terms = model.training_losses(image, label, text_weight=25.0, image_weight=10.0)
    with torch.no_grad():
        scale = model.logit_scale.exp()
        text = F.normalize(model.encode_text(), dim=-1)
        img = F.normalize(model.encode_image(image), dim=-1)
        fixed = F.normalize(model.fixed_embeddings, dim=-1)
        zs = F.normalize(model.prompt_learner.ZS_image_encoder(image), dim=-1)
        logits, zs_logits = scale * img @ text.t(), scale * zs @ fixed.t()
        p_zs = zs_logits.softmax(1)
        kl = (p_zs * (p_zs.log() - logits.log_softmax(1))).sum() / logits.numel()
    assert terms["ce"].item() == pytest.approx(F.cross_entropy(logits, label).item(), rel=1e-5)
    assert terms["scl_text"].item() == pytest.approx(25.0 * (text - fixed).abs().mean().item(), rel=1e-5)
    assert terms["scl_image"].item() == pytest.approx(10.0 * (img - zs).abs().mean().item(), rel=1e-5)
    assert terms["scl_logits"].item() == pytest.approx(kl.item(), rel=1e-4, abs=1e-7)


def test_tiny_teacher_training_writes_a_loadable_teacher(tmp_path):
    from tests.trainers_tiny_setup import DATASET, make_world
    import train
    from trainers.teacher import build_teacher, teacher_checkpoint_candidates

    world = make_world(tmp_path, make_teacher=False)
    out = tmp_path / "teacher_run"
    args = train.build_parser().parse_args([
        "--root", world["root"], "--seed", "1", "--trainer", "PromptSRC",
        "--dataset-config-file", "configs/datasets/oxford_pets.yaml",
        "--config-file", "configs/trainers/PromptSRC/vit_l14_c2_ep20_batch8_4+4ctx.yaml",
        "--output-dir", str(out),
        "DATASET.NUM_SHOTS", "0", "DATASET.SUBSAMPLE_CLASSES", "base",
        "MODEL.BACKBONE.WEIGHTS", world["weights"][1], "INPUT.SIZE", "(32, 32)",
        "OPTIM.MAX_EPOCH", "2", "OPTIM.WARMUP_EPOCH", "-1", "TRAINER.PROMPTSRC.GPA_MEAN", "1",
        "TRAINER.PROMPTSRC.PROMPT_DEPTH_VISION", "3", "TRAINER.PROMPTSRC.PROMPT_DEPTH_TEXT", "3",
        "DATALOADER.NUM_WORKERS", "0", "DATALOADER.TRAIN_X.BATCH_SIZE", "2", "USE_CUDA", "False",
        "TRAINER.PROMPTSRC.PREC", "fp32",
    ])
    trainer = train.main(args)
    ckpt = out / "VLPromptLearner" / "model.pth.tar-2"
    assert ckpt.is_file()
    log = (out / "log.txt").read_text()
    assert "Using GPA model for final inference..." in log and "Parameters count: 6" in log
    saved = torch.load(ckpt, map_location="cpu", weights_only=False)
    assert set(saved) >= {"state_dict", "epoch", "optimizer", "scheduler", "val_result"}
    # GPA: the saved prompts are the Gaussian average, so they equal the live (swapped) prompts
    assert torch.equal(saved["state_dict"]["prompt_learner.ctx"], trainer.model.prompt_learner.ctx.detach())

    # install it the way scripts/teacher_train.sh does and load it as a distillation teacher
    from tests.trainers_tiny_setup import make_cfg
    teacher_root = tmp_path / "teacher_model"
    cfg = make_cfg(world["root"], "PromptKD", str(tmp_path / "kd"), world["weights"], str(teacher_root))
    dest = teacher_checkpoint_candidates(cfg)[0]
    assert dest.endswith(os.path.join(DATASET, "VLPromptLearner", "model-best.pth.tar"))
    os.makedirs(os.path.dirname(dest))
    os.link(ckpt, dest)
    teacher = build_teacher(cfg, ["a", "b", "c", "d", "e"], verbose=False)
    assert torch.equal(teacher.model.prompt_learner.ctx, saved["state_dict"]["prompt_learner.ctx"])
    assert teacher.text_features.shape[0] == 5
