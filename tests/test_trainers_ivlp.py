"""IVLP: independent deep prompts on both towers checked against a hand-written forward, the loss, a
one-epoch run with results.json, and its checkpoint (IVLP's folder and keys) reloaded for the new classes."""
import pytest
import torch

from dassl.utils import UserError
from tests import prompt_reference as ref
from tests.supervised_tiny_setup import (check_base2new_results, new_class_logits, read_json, restored_after, run,
                                         saved_state, tiny_world, train_step)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("ivlp")
    world = tiny_world(root)
    trainer = run(world, "IVLP", root / "run")
    return world, root, trainer


def test_prompts_enter_both_towers_where_ivlp_puts_them(trained):
    _, _, trainer = trained
    model = trainer.model
    visual, text_tower = model.image_encoder, model.text_encoder.transformer
    assert visual.VPT.shape == (4, 64)  # N_CTX_VISION 4, appended after the patches
    assert [i for i, b in enumerate(visual.transformer.resblocks) if b.n_prompts] == [1]  # depth 2: block 1
    assert [i for i, b in enumerate(text_tower.resblocks) if b.n_prompts] == [1]
    torch.manual_seed(5)
    image = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        prompts = model.prompt_learner()
        assert torch.equal(prompts[:, 1:5], model.prompt_learner.ctx.expand(3, -1, -1))  # text ctx at 1..4
        text = ref.text_features(model.text_encoder, prompts, model.tokenized_prompts,
                                 deep=ref.owned_deep_prompts(text_tower))
        img = ref.image_features(visual, image, appended=visual.VPT, deep=ref.owned_deep_prompts(visual.transformer))
        assert torch.allclose(model.encode_text(), text, atol=1e-4)
        assert torch.allclose(model.encode_image(image), img, atol=1e-4)
        # without the block-1 prompts the hand-written forward no longer matches: they are used
        assert not torch.allclose(model.encode_image(image), ref.image_features(visual, image, visual.VPT), atol=1e-4)


def test_loss_by_hand(trained):
    _, _, trainer = trained
    model = trainer.model
    torch.manual_seed(6)
    image, label = torch.randn(3, 3, 32, 32), torch.tensor([1, 1, 0])
    with torch.no_grad():
        logits = model.logit_scale.exp() * ref.normalize(model.encode_image(image)) @ \
            ref.normalize(model.encode_text()).t()
        expected = -(logits.log_softmax(1)[torch.arange(3), label]).mean()
    with restored_after(trainer):
        summary = train_step(trainer, image, label)
        assert model.image_encoder.VPT.grad.abs().sum() > 0
        assert model.text_encoder.transformer.resblocks[1].VPT_shallow.grad.abs().sum() > 0
    assert summary["loss"] == pytest.approx(expected.item(), rel=1e-4)


def test_one_epoch_run_results_and_checkpoint_keys(trained):
    _, root, trainer = trained
    check_base2new_results(root / "run", "IVLP")
    state = saved_state(root / "run", "VLPromptLearner")  # IVLP's folder: the whole model
    assert {"prompt_learner.ctx", "prompt_learner.token_prefix", "prompt_learner.token_suffix", "image_encoder.VPT",
            "image_encoder.transformer.resblocks.1.VPT_shallow", "text_encoder.transformer.resblocks.1.VPT_shallow",
            "image_encoder.conv1.weight", "text_encoder.positional_embedding", "logit_scale"} <= set(state)
    assert not any(k.startswith("token_embedding") for k in state)
    assert sorted(n for n, p in trainer.model.named_parameters() if p.requires_grad) == [
        "image_encoder.VPT", "image_encoder.transformer.resblocks.1.VPT_shallow", "prompt_learner.ctx",
        "text_encoder.transformer.resblocks.1.VPT_shallow"]


def test_checkpoint_reloads_for_the_new_classes(trained, capsys):
    world, root, trainer = trained
    evaluated = run(world, "IVLP", root / "eval_new", model_dir=root / "run", load_epoch=1, subsample="new")
    assert "WARNING" not in capsys.readouterr().out
    state = saved_state(root / "run", "VLPromptLearner")
    assert torch.equal(evaluated.model.image_encoder.VPT.detach(), state["image_encoder.VPT"])
    assert evaluated.model.prompt_learner.token_suffix.shape[0] == 2
    in_run, reloaded = new_class_logits(trainer, evaluated)
    assert torch.allclose(in_run, reloaded, atol=1e-5)
    assert read_json(root / "eval_new" / "results.json")["eval_only"] is True


def test_text_depth_zero_is_refused(tmp_path):
    world = tiny_world(tmp_path)
    with pytest.raises(UserError, match="PROMPT_DEPTH_TEXT"):
        run(world, "IVLP", tmp_path / "bad", opts=["TRAINER.IVLP.PROMPT_DEPTH_TEXT", "0"])
