"""CLIP with MaPLe's coupled prompts: towers without prompt parameters that take the prompts as inputs,
checked token by token and block by block against a hand-written forward."""
import pytest
import torch

import clip
from clip.model import build_model
from clip.random_weights import preset_state_dict
from tests import prompt_reference as ref

MAPLE = {"trainer": "MaPLe", "vision_depth": 0, "language_depth": 0, "vision_ctx": 0, "language_ctx": 0,
         "maple_length": 2}


@pytest.fixture(scope="module")
def tiny_sd():
    return preset_state_dict("tiny-large", seed=5)  # 3 layers per tower: two deep blocks


@pytest.fixture(scope="module")
def maple_model(tiny_sd):
    return build_model(tiny_sd, MAPLE)


def test_maple_design_adds_no_parameters_and_is_plain_without_prompts(tiny_sd, maple_model):
    assert set(maple_model.state_dict()) == set(tiny_sd)
    assert maple_model.coupled_prompts == 2 and maple_model.prompt_parameter_names() == []
    plain = build_model(tiny_sd)
    image = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    text = clip.tokenize(["a photo of a dog.", "a cat."])
    with torch.no_grad():
        assert torch.equal(maple_model.encode_image(image), plain.encode_image(image))
        assert torch.equal(maple_model.encode_text(text), plain.encode_text(text))


def test_visual_coupled_prompts_are_appended_then_replaced_in_blocks(maple_model):
    torch.manual_seed(1)
    width = maple_model.visual.conv1.weight.shape[0]
    image = torch.randn(2, 3, 32, 32)
    shallow = torch.randn(2, width)
    deep = [torch.randn(2, width), torch.randn(2, width)]
    with torch.no_grad():
        out = maple_model.encode_image(image, shallow, deep)
        expected = ref.image_features(maple_model.visual, image, appended=shallow, deep=deep)
        assert torch.allclose(out, expected, atol=1e-4, rtol=1e-4)
        # a prompt for block 1 only: block 2 carries block 1's output tokens
        one = maple_model.encode_image(image, shallow, deep[:1])
        assert torch.allclose(one, ref.image_features(maple_model.visual, image, shallow, deep[:1]), atol=1e-4)
        assert not torch.allclose(one, out, atol=1e-4)
        # prompts beyond the last block are not used
        extra = maple_model.encode_image(image, shallow, deep + [torch.randn(2, width)] * 3)
        assert torch.allclose(extra, out, atol=1e-6)


def test_text_coupled_prompts_replace_the_context_positions_in_blocks(maple_model):
    torch.manual_seed(2)
    tokens = clip.tokenize(["X X red cube.", "X X blue ball with stripes."])
    width = maple_model.token_embedding.weight.shape[1]
    embeddings = maple_model.token_embedding(tokens).detach()
    embeddings[:, 1:3] = torch.randn(2, width)  # the learnt context of layer 0
    deep = [torch.randn(2, width), torch.randn(2, width)]
    with torch.no_grad():
        out = maple_model.encode_text_from_embeddings(embeddings, tokens, deep)
        expected = ref.text_features(maple_model, embeddings, tokens, deep=deep)
    assert torch.allclose(out, expected, atol=1e-4, rtol=1e-4)
    # positions after the context (class words) are not overwritten: changing them changes the output
    altered = embeddings.clone()
    altered[:, 3] += 1.0
    with torch.no_grad():
        assert not torch.allclose(maple_model.encode_text_from_embeddings(altered, tokens, deep), out)


def test_coupled_prompts_are_checked(tiny_sd, maple_model):
    width = maple_model.visual.conv1.weight.shape[0]
    image = torch.randn(1, 3, 32, 32)
    with pytest.raises(ValueError, match="maple_length = 2"):
        maple_model.encode_image(image, torch.randn(3, width))
    with pytest.raises(ValueError, match="pass `prompts` too"):
        maple_model.visual(image, None, [torch.randn(2, width)])
    plain = build_model(tiny_sd)
    with pytest.raises(ValueError, match="MaPLe"):
        plain.encode_image(image, torch.randn(2, width))
    ivlp = build_model(tiny_sd, {"trainer": "IVLP", "vision_depth": 2, "language_depth": 2, "vision_ctx": 2,
                                 "language_ctx": 2})
    with pytest.raises(ValueError, match="owns its prompts"):
        ivlp.visual(image, torch.randn(2, width))
