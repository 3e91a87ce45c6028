"""MaPLe: the coupled prompts (text context, its projection into the vision tower, deep prompts and their
projections) checked against a hand-written forward, the loss, a one-epoch run with results.json, and its
checkpoint (MaPLe's folder and keys) reloaded for the new classes."""
import pytest
import torch

import clip
from clip.random_weights import preset_state_dict
from tests import prompt_reference as ref
from tests.supervised_tiny_setup import (check_base2new_results, new_class_logits, read_json, restored_after, run,
                                         saved_state, tiny_world, train_step)
from trainers.maple import MaPLeCLIP, maple_design_details


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("maple")
    world = tiny_world(root)
    trainer = run(world, "MaPLe", root / "run")
    return world, root, trainer


def test_learner_layout_and_projection_init():
    clip_model = clip.build_model(preset_state_dict("tiny-large", seed=2), maple_design_details(2))
    torch.manual_seed(0)
    model = MaPLeCLIP(["cat", "dog"], clip_model, n_ctx=2, ctx_init="a photo of a", prompt_depth=3, verbose=False)
    learner = model.prompt_learner
    shapes = {k: tuple(v.shape) for k, v in learner.state_dict().items() if not k.startswith("token_")}
    assert shapes == {"ctx": (2, 128), "proj.weight": (128, 128), "proj.bias": (128,),
                      "compound_prompts_text.0": (2, 128), "compound_prompts_text.1": (2, 128),
                      "compound_prompt_projections.0.weight": (128, 128), "compound_prompt_projections.0.bias": (128,),
                      "compound_prompt_projections.1.weight": (128, 128), "compound_prompt_projections.1.bias": (128,)}
    projections = learner.compound_prompt_projections
    assert torch.equal(projections[0].weight, projections[1].weight)  # MaPLe copies one initial Linear
    # ctx starts as the embeddings of "a photo" and "of a" stays fixed text in the prompt
    ids = clip.tokenize(["a photo of a cat."])[0]
    with torch.no_grad():
        assert torch.allclose(learner.ctx, clip_model.token_embedding(ids[1:3]))
        assert torch.allclose(learner.token_suffix[0, :2], clip_model.token_embedding(ids[3:5]))
    with pytest.raises(ValueError, match="MaPLe"):
        MaPLeCLIP(["cat"], clip.build_model(preset_state_dict("tiny-large", seed=2)), n_ctx=2, verbose=False)


def test_coupled_prompts_enter_where_maple_puts_them():
    clip_model = clip.build_model(preset_state_dict("tiny-large", seed=2), maple_design_details(2))
    torch.manual_seed(1)
    model = MaPLeCLIP(["red cube", "blue ball"], clip_model, n_ctx=2, prompt_depth=3, verbose=False)
    learner = model.prompt_learner
    image = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        for p in learner.compound_prompt_projections.parameters():
            p.add_(torch.randn_like(p) * 0.05)  # distinct projections, so a swapped index is caught
        prompts = torch.cat([learner.token_prefix, learner.ctx.expand(2, -1, -1), learner.token_suffix], dim=1)
        deep_text = list(learner.compound_prompts_text)
        deep_vision = [torch.nn.functional.linear(t, proj.weight, proj.bias)
                       for t, proj in zip(deep_text, learner.compound_prompt_projections)]
        shallow = learner.ctx @ learner.proj.weight.t() + learner.proj.bias
        text = ref.normalize(ref.text_features(model.text_encoder, prompts, learner.tokenized_prompts, deep_text))
        img = ref.normalize(ref.image_features(model.image_encoder, image, appended=shallow, deep=deep_vision))
        logits = model.logit_scale.exp() * img @ text.t()
        assert torch.allclose(model(image), logits, atol=1e-4)
        reversed_deep = ref.image_features(model.image_encoder, image, shallow, deep_vision[::-1])
        assert not torch.allclose(ref.normalize(reversed_deep), img, atol=1e-4)


def test_loss_by_hand(trained):
    _, _, trainer = trained
    model = trainer.model
    torch.manual_seed(6)
    image, label = torch.randn(2, 3, 32, 32), torch.tensor([2, 1])
    with torch.no_grad():
        logits = model(image)
        by_formula = -(logits.log_softmax(1)[torch.arange(2), label]).mean()
    with restored_after(trainer):
        summary = train_step(trainer, image, label)
        learner = model.prompt_learner
        for tensor in (learner.ctx, learner.proj.weight, learner.compound_prompts_text[0],
                       learner.compound_prompt_projections[0].weight):
            assert tensor.grad is not None and tensor.grad.abs().sum() > 0
    assert summary["loss"] == pytest.approx(by_formula.item(), rel=1e-4)


def test_one_epoch_run_results_and_checkpoint_keys(trained):
    _, root, trainer = trained
    check_base2new_results(root / "run", "MaPLe")
    state = saved_state(root / "run", "MultiModalPromptLearner")  # MaPLe's folder: the whole model
    assert {"prompt_learner.ctx", "prompt_learner.proj.weight", "prompt_learner.proj.bias",
            "prompt_learner.compound_prompts_text.0", "prompt_learner.compound_prompt_projections.0.weight",
            "prompt_learner.compound_prompt_projections.0.bias", "prompt_learner.token_prefix",
            "prompt_learner.token_suffix", "image_encoder.conv1.weight", "text_encoder.ln_final.weight",
            "logit_scale"} <= set(state)
    assert not any("VPT" in k for k in state)  # the towers own no prompts under MaPLe's design
    trainable = {n for n, p in trainer.model.named_parameters() if p.requires_grad}
    assert trainable == {k for k in state if k.startswith("prompt_learner.") and "token_" not in k}


def test_checkpoint_reloads_for_the_new_classes(trained):
    world, root, trainer = trained
    evaluated = run(world, "MaPLe", root / "eval_new", model_dir=root / "run", load_epoch=1, subsample="new")
    state = saved_state(root / "run", "MultiModalPromptLearner")
    learner = evaluated.model.prompt_learner
    assert torch.equal(learner.compound_prompts_text[0].detach(), state["prompt_learner.compound_prompts_text.0"])
    assert learner.token_prefix.shape[0] == 2
    in_run, reloaded = new_class_logits(trainer, evaluated)
    assert torch.allclose(in_run, reloaded, atol=1e-5)
    assert read_json(root / "eval_new" / "results.json")["subsample"] == "new"
