"""CoOp: prompt layout (context tokens, class-token positions), logits and loss by hand, a one-epoch run
with results.json, and its checkpoint (CoOp's folder and keys) reloaded for other classes."""
import pytest
import torch

import clip
from clip.random_weights import preset_state_dict
from dassl.utils import UserError
from tests import prompt_reference as ref
from tests.supervised_tiny_setup import (check_base2new_results, new_class_logits, read_json, restored_after, run,
                                         saved_state, tiny_world, train_step)
from trainers.prompt_learners import CoOpPromptLearner, coop_context

CLASSNAMES = ["red_cube", "blue ball with stripes", "cone"]


@pytest.fixture(scope="module")
def tiny_clip():
    return clip.build_model(preset_state_dict("tiny", seed=3))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("coop")
    world = tiny_world(root)
    trainer = run(world, "CoOp", root / "run")
    return world, root, trainer


def words(embedding, text):
    """Token embeddings of ``text`` without start / end tokens."""
    ids = clip.tokenize([text])[0]
    end = int(ids.argmax())
    return embedding(ids[1:end]).detach()


@pytest.mark.parametrize("position", ["end", "middle", "front"])
def test_prompt_rows_follow_the_class_token_position(tiny_clip, position):
    torch.manual_seed(0)
    learner = CoOpPromptLearner(CLASSNAMES, tiny_clip, n_ctx=4, class_token_position=position, verbose=False)
    prompts = learner().detach()
    ctx = learner.ctx.detach()
    sos = tiny_clip.token_embedding(torch.tensor([49406])).detach()
    for i, name in enumerate(CLASSNAMES):
        name_rows = words(tiny_clip.token_embedding, name.replace("_", " "))
        dot, eos = words(tiny_clip.token_embedding, "."), tiny_clip.token_embedding(torch.tensor([49407])).detach()
        layout = {"end": [ctx, name_rows], "middle": [ctx[:2], name_rows, ctx[2:]], "front": [name_rows, ctx]}[position]
        expected = torch.cat([sos] + layout + [dot, eos])
        assert torch.allclose(prompts[i, :expected.shape[0]], expected), (position, name)
        # the end token stays where the tokenizer put it, so the argmax of the ids still finds it
        assert int(learner.tokenized_prompts[i].argmax()) == expected.shape[0] - 1


def test_context_rules(tiny_clip):
    assert coop_context("a photo of a", 16) == ("a photo of a", 4, True)  # CTX_INIT sets the length
    assert coop_context("", 3) == ("X X X", 3, False)
    learner = CoOpPromptLearner(CLASSNAMES, tiny_clip, n_ctx=16, ctx_init="a_photo_of_a", class_specific=True,
                                verbose=False)
    assert learner.ctx.shape == (4, 64) and not learner.class_specific  # CSC is ignored with CTX_INIT
    assert torch.allclose(learner.ctx, words(tiny_clip.token_embedding, "a photo of a"))
    csc = CoOpPromptLearner(CLASSNAMES, tiny_clip, n_ctx=2, class_specific=True, verbose=False)
    assert csc.ctx.shape == (3, 2, 64) and abs(csc.ctx.std().item() - 0.02) < 0.01
    with pytest.raises(ValueError, match="class-specific"):
        csc.set_classnames(["a", "b"])
    with pytest.raises(ValueError, match="CLASS_TOKEN_POSITION"):
        CoOpPromptLearner(CLASSNAMES, tiny_clip, class_token_position="left", verbose=False)


def test_one_epoch_run_results_and_checkpoint_keys(trained):
    world, root, trainer = trained
    check_base2new_results(root / "run", "CoOp")
    state = saved_state(root / "run", "prompt_learner")
    assert set(state) == {"ctx", "token_prefix", "token_suffix"}  # CoOp's prompt_learner keys
    assert state["ctx"].shape == (4, 64) and state["token_prefix"].shape[0] == 3  # base classes
    assert torch.equal(state["ctx"], trainer.model.prompt_learner.ctx.detach())
    assert not torch.equal(state["ctx"], words(trainer.model.prompt_learner._token_embedding[0], "a photo of a"))
    assert [n for n, p in trainer.model.named_parameters() if p.requires_grad] == ["prompt_learner.ctx"]
    assert "acc" in (root / "run" / "log.txt").read_text()  # CoOp logs the batch accuracy


def test_checkpoint_reloads_for_the_new_classes(trained, capsys):
    world, root, trainer = trained
    evaluated = run(world, "CoOp", root / "eval_new", model_dir=root / "run", load_epoch=1, subsample="new")
    out = capsys.readouterr().out
    assert f'Loading weights to prompt_learner from "{root / "run" / "prompt_learner" / "model.pth.tar-1"}"' in out
    assert "WARNING" not in out  # only the token buffers were left out
    learner = evaluated.model.prompt_learner
    assert torch.equal(learner.ctx.detach(), saved_state(root / "run", "prompt_learner")["ctx"])
    assert learner.token_prefix.shape[0] == 2  # rebuilt for the new classes, not loaded
    in_run, reloaded = new_class_logits(trainer, evaluated)
    assert torch.allclose(in_run, reloaded, atol=1e-5)
    record = read_json(root / "eval_new" / "results.json")
    assert record["protocol"] == "evaluation" and record["eval_only"] and record["subsample"] == "new"
    assert record["best"]["epoch"] == 1 and record["model_dir"] == str(root / "run")
    assert record["best"]["accuracy"] == read_json(root / "run" / "results.json")["last"]["new"]


def test_an_original_half_precision_checkpoint_loads(trained, tmp_path):
    world, root, trainer = trained
    folder = tmp_path / "original" / "prompt_learner"
    folder.mkdir(parents=True)
    ctx = torch.randn(4, 64).half()
    # CoOp's file: fp16 tensors, token buffers of another class set (ImageNet-sized in real files)
    torch.save({"state_dict": {"ctx": ctx, "token_prefix": torch.zeros(7, 1, 64).half(),
                               "token_suffix": torch.zeros(7, 72, 64).half()},
                "epoch": 50, "optimizer": None, "scheduler": None}, folder / "model.pth.tar-50")
    evaluated = run(world, "CoOp", tmp_path / "eval", model_dir=tmp_path / "original", load_epoch=50)
    assert torch.equal(evaluated.model.prompt_learner.ctx.detach(), ctx.float())
    assert read_json(tmp_path / "eval" / "results.json")["best"]["epoch"] == 50


def test_logits_and_loss_by_hand(trained):
    _, _, trainer = trained
    model = trainer.model
    torch.manual_seed(4)
    image, label = torch.randn(3, 3, 32, 32), torch.tensor([0, 2, 1])
    with torch.no_grad():
        prompts = model.prompt_learner()
        text = ref.normalize(ref.text_features(model.text_encoder, prompts, model.tokenized_prompts))
        img = ref.normalize(ref.image_features(model.image_encoder, image))
        logits = model.logit_scale.exp() * img @ text.t()
        assert torch.allclose(model(image), logits, atol=1e-4)
        expected = -(logits.log_softmax(1)[torch.arange(3), label]).mean()
    with restored_after(trainer):
        summary = train_step(trainer, image, label)
    assert summary["loss"] == pytest.approx(expected.item(), rel=1e-4)
    assert summary["acc"] == pytest.approx(100.0 * (logits.argmax(1) == label).float().mean().item())


def test_class_specific_context_cannot_train_for_base_to_new(tmp_path):
    world = tiny_world(tmp_path)
    with pytest.raises(UserError, match="CSC"):
        run(world, "CoOp", tmp_path / "csc", opts=["TRAINER.COOP.CTX_INIT", "", "TRAINER.COOP.CSC", "True"])


def test_logit_scale_and_towers_stay_frozen(trained):
    _, _, trainer = trained
    before = {k: v.clone() for k, v in trainer.model.state_dict().items() if "prompt_learner" not in k}
    image, label = torch.randn(2, 3, 32, 32), torch.tensor([0, 1])
    with restored_after(trainer):
        ctx = trainer.model.prompt_learner.ctx.detach().clone()
        trainer.optim.param_groups[0]["lr"] = 0.01  # the one-epoch cosine schedule ended at 0
        train_step(trainer, image, label)
        after = trainer.model.state_dict()
        assert all(torch.equal(after[k], v) for k, v in before.items())
        assert not torch.equal(trainer.model.prompt_learner.ctx, ctx)
