"""CoCoOp: the image-conditioned context and its logits by hand, the loss, a one-epoch run with results.json,
and its checkpoint (CoCoOp's folder and keys) reloaded for the new classes."""
import pytest
import torch

import clip
from clip.random_weights import preset_state_dict
from tests import prompt_reference as ref
from tests.supervised_tiny_setup import (check_base2new_results, new_class_logits, read_json, restored_after, run,
                                         saved_state, tiny_world, train_step)
from trainers.cocoop import CoCoOpCLIP


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("cocoop")
    world = tiny_world(root)
    trainer = run(world, "CoCoOp", root / "run")
    return world, root, trainer


def test_meta_net_layout_and_per_image_context():
    model = CoCoOpCLIP(["cat", "dog"], clip.build_model(preset_state_dict("tiny", seed=3)), n_ctx=4,
                       ctx_init="a photo of a", verbose=False)
    learner = model.prompt_learner
    shapes = {k: tuple(v.shape) for k, v in learner.state_dict().items()}
    assert shapes["meta_net.linear1.weight"] == (2, 32) and shapes["meta_net.linear2.weight"] == (64, 2)
    assert shapes["ctx"] == (4, 64)
    features = ref.normalize(torch.randn(3, 32))
    with torch.no_grad():
        contexts = learner(features)
        shift = learner.meta_net.linear2(torch.relu(learner.meta_net.linear1(features)))
        assert torch.allclose(contexts, learner.ctx + shift[:, None, :])  # one shift for every context token
        prompts = learner.assemble(contexts[1])
    assert torch.equal(prompts[:, 1:5], contexts[1].expand(2, -1, -1))  # positions 1..4 of every class
    assert torch.equal(prompts[:, :1], learner.token_prefix) and torch.equal(prompts[:, 5:], learner.token_suffix)


def test_logits_and_loss_by_hand(trained):
    _, _, trainer = trained
    model = trainer.model
    learner = model.prompt_learner
    torch.manual_seed(4)
    image, label = torch.randn(2, 3, 32, 32), torch.tensor([2, 0])
    with torch.no_grad():
        img = ref.normalize(ref.image_features(model.image_encoder, image))
        rows = []
        for f in img:
            shift = learner.meta_net.linear2(torch.relu(learner.meta_net.linear1(f)))
            prompts = torch.cat([learner.token_prefix, (learner.ctx + shift).expand(learner.n_cls, -1, -1),
                                 learner.token_suffix], dim=1)
            text = ref.normalize(ref.text_features(model.text_encoder, prompts, learner.tokenized_prompts))
            rows.append(model.logit_scale.exp() * text @ f)
        logits = torch.stack(rows)
        assert torch.allclose(model(image), logits, atol=1e-4)
        assert model.class_features() is None
        expected = -(logits.log_softmax(1)[torch.arange(2), label]).mean()
    with restored_after(trainer):
        summary = train_step(trainer, image, label)
        assert trainer.model.prompt_learner.meta_net.linear1.weight.grad.abs().sum() > 0
    assert summary["loss"] == pytest.approx(expected.item(), rel=1e-4)


def test_one_epoch_run_results_and_checkpoint_keys(trained):
    _, root, trainer = trained
    check_base2new_results(root / "run", "CoCoOp")
    state = saved_state(root / "run", "prompt_learner")
    assert set(state) == {"ctx", "meta_net.linear1.weight", "meta_net.linear1.bias", "meta_net.linear2.weight",
                          "meta_net.linear2.bias", "token_prefix", "token_suffix"}
    trainable = sorted(n for n, p in trainer.model.named_parameters() if p.requires_grad)
    assert trainable == sorted(f"prompt_learner.{k}" for k in state if not k.startswith("token_"))


def test_checkpoint_reloads_for_the_new_classes(trained):
    world, root, trainer = trained
    evaluated = run(world, "CoCoOp", root / "eval_new", model_dir=root / "run", load_epoch=1, subsample="new")
    state = saved_state(root / "run", "prompt_learner")
    loaded = evaluated.model.prompt_learner.state_dict()
    assert torch.equal(loaded["meta_net.linear2.weight"], state["meta_net.linear2.weight"])
    assert loaded["token_prefix"].shape[0] == 2
    in_run, reloaded = new_class_logits(trainer, evaluated)
    assert torch.allclose(in_run, reloaded, atol=1e-5)
    record = read_json(root / "eval_new" / "results.json")
    assert record["protocol"] == "evaluation" and record["subsample"] == "new"
