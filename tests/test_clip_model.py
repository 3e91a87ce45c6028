"""CLIP model: parity with open_clip, deep prompts, checkpoint key compatibility."""
import pytest
import torch

import clip
from clip.model import architecture_from_state_dict, build_model
from clip.random_weights import PRESETS, preset_state_dict, random_state_dict

IVLP = {"trainer": "IVLP", "vision_depth": 9, "language_depth": 9, "vision_ctx": 4, "language_ctx": 4}


def open_clip_reference(state_dict):
    """open_clip's QuickGELU CLIP with the same architecture, loaded from the same weights."""
    from open_clip.model import CLIP as OpenClipCLIP, CLIPTextCfg, CLIPVisionCfg

    arch = architecture_from_state_dict(state_dict)
    with torch.device("meta"):
        model = OpenClipCLIP(
            arch["embed_dim"],
            vision_cfg=CLIPVisionCfg(layers=arch["vision_layers"], width=arch["vision_width"],
                                     patch_size=arch["vision_patch_size"],
                                     image_size=arch["image_resolution"]),
            text_cfg=CLIPTextCfg(context_length=arch["context_length"], vocab_size=arch["vocab_size"],
                                 width=arch["transformer_width"], heads=arch["transformer_heads"],
                                 layers=arch["transformer_layers"]),
            quick_gelu=True)
    model.load_state_dict(dict(state_dict), assign=True, strict=True)
    n = arch["context_length"]  # non-persistent buffer, not in the state dict
    model.attn_mask = torch.full((n, n), float("-inf")).triu_(1)
    return model.eval()


def rel_err(a, b):
    return ((a - b).abs().max() / b.abs().max()).item()


def images(n, resolution, seed=1):
    return torch.randn(n, 3, resolution, resolution, generator=torch.Generator().manual_seed(seed))


TEXTS = ["a photo of a dog.", "a centered satellite photo of Annual Crop Land.", "banded texture."]


@pytest.fixture(scope="module")
def tiny_sd():
    return preset_state_dict("tiny", seed=3)


@pytest.mark.parametrize("preset", ["tiny", "tiny-large", "tiny-ctx16", "ViT-B/16"])
def test_matches_open_clip(preset):
    state_dict = preset_state_dict(preset, seed=7)
    ours = build_model(state_dict)
    theirs = open_clip_reference(state_dict)
    image = images(1 if preset == "ViT-B/16" else 3, ours.visual.input_resolution)
    text = clip.tokenize(TEXTS[:2], context_length=ours.context_length)
    with torch.no_grad():
        our_img, ref_img = ours.encode_image(image), theirs.encode_image(image)
        our_txt, ref_txt = ours.encode_text(text), theirs.encode_text(text)
        our_logits, _ = ours(image, text)
        ref_img_n, ref_txt_n, ref_scale = theirs(image, text)
        ref_logits = ref_scale * ref_img_n @ ref_txt_n.t()
    assert our_img.dtype == torch.float32 and our_img.shape == (image.shape[0], PRESETS[preset]["embed_dim"])
    assert rel_err(our_img, ref_img) < 1e-5
    assert rel_err(our_txt, ref_txt) < 1e-5
    assert rel_err(our_logits, ref_logits) < 1e-5
    # realistic init: finite, non-degenerate logits
    assert torch.isfinite(our_logits).all() and our_logits.std() > 0.1


def test_architecture_inferred_from_state_dict():
    arch = architecture_from_state_dict(preset_state_dict("tiny-large"))
    assert arch == dict(embed_dim=48, image_resolution=32, vision_layers=3, vision_width=128,
                        vision_patch_size=8, context_length=77, vocab_size=49408,
                        transformer_width=128, transformer_heads=2, transformer_layers=3)


def test_vit_b16_state_dict_matches_official_counts():
    shapes = clip.random_weights.state_dict_shapes(**PRESETS["ViT-B/16"])
    assert len(shapes) == 302
    assert sum(torch.Size(s).numel() for s in shapes.values()) == 149_620_737
    assert shapes["visual.conv1.weight"] == (768, 3, 16, 16)
    assert shapes["visual.positional_embedding"] == (197, 768)
    large = clip.random_weights.state_dict_shapes(**PRESETS["ViT-L/14"])
    assert len(large) == 446 and sum(torch.Size(s).numel() for s in large.values()) == 427_616_513


def test_model_attributes_and_float32(tiny_sd):
    model = build_model({k: v.half() for k, v in tiny_sd.items()})
    assert not model.training
    assert model.dtype == torch.float32
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert model.visual.input_resolution == 32 and model.visual.output_dim == 32
    assert model.context_length == 77
    for name in ("transformer", "token_embedding", "positional_embedding", "ln_final",
                 "text_projection", "logit_scale"):
        assert hasattr(model, name)
    assert abs(model.logit_scale.exp().item() - 100.0) < 0.1  # ln(100) stored in fp16


@pytest.mark.parametrize("vision_depth,language_depth", [(0, 0), (1, 1), (3, 3), (9, 2)])
def test_prompt_parameter_names_follow_depth(vision_depth, language_depth):
    sd = random_state_dict(image_resolution=32, vision_layers=12, vision_width=64,
                           vision_patch_size=16, embed_dim=32, context_length=16, text_width=64,
                           text_layers=12, seed=0)
    details = {"trainer": "IVLP", "vision_depth": vision_depth, "language_depth": language_depth,
               "vision_ctx": 4, "language_ctx": 2}
    model = build_model(sd, details)
    names = set(model.prompt_parameter_names())
    expected = set()
    if vision_depth:
        expected.add("visual.VPT")
    expected |= {f"visual.transformer.resblocks.{i}.VPT_shallow" for i in range(1, vision_depth)}
    expected |= {f"transformer.resblocks.{i}.VPT_shallow" for i in range(1, language_depth)}
    assert names == expected
    params = dict(model.named_parameters())
    for name in names:
        width = 64
        n_ctx = 2 if name.startswith("transformer.") else 4
        assert params[name].shape == (n_ctx, width)
        assert 0.005 < params[name].std().item() < 0.05  # normal(0, 0.02) init
    n_extra = sum(p.numel() for n, p in params.items() if "VPT" in n)
    assert n_extra == 4 * 64 * vision_depth + 2 * 64 * max(language_depth - 1, 0)


@pytest.mark.parametrize("details", [None, {"trainer": "CoOp", "vision_depth": 0, "language_depth": 0,
                                            "vision_ctx": 0, "language_ctx": 0},
                                     {"trainer": "IVLP", "vision_depth": 0, "language_depth": 0,
                                      "vision_ctx": 4, "language_ctx": 4}])
def test_depth_zero_is_plain_clip(tiny_sd, details):
    plain = build_model(tiny_sd)
    model = build_model(tiny_sd, details)
    assert set(model.state_dict()) == set(tiny_sd)
    image, text = images(2, 32), clip.tokenize(TEXTS)
    with torch.no_grad():
        assert torch.equal(model.encode_image(image), plain.encode_image(image))
        assert torch.equal(model.encode_text(text), plain.encode_text(text))


def test_visual_prompts_are_appended_and_replaced(tiny_sd):
    details = {"trainer": "IVLP", "vision_depth": 2, "language_depth": 0, "vision_ctx": 3,
               "language_ctx": 0}
    model = build_model(tiny_sd, details)
    seen = []
    hook = model.visual.transformer.resblocks[0].register_forward_pre_hook(
        lambda m, args: seen.append(args[0].shape))
    image = images(2, 32)
    with torch.no_grad():
        base = model.encode_image(image)
        assert seen[0] == (16 + 1 + 3, 2, 64)  # CLS + 4x4 patches + 3 prompts, sequence-first
        hook.remove()
        # (random changes: a constant shift would vanish in the LayerNorms)
        model.visual.transformer.resblocks[1].VPT_shallow.add_(torch.randn(3, 64))
        changed = model.encode_image(image)
        model.visual.VPT.add_(torch.randn(3, 64))  # reaches the class token in block 0
        changed_vpt = model.encode_image(image)
    assert not torch.allclose(base, changed)
    assert not torch.allclose(changed, changed_vpt)


def test_text_prompts_replace_positions_after_start(tiny_sd):
    details = {"trainer": "IVLP", "vision_depth": 0, "language_depth": 2, "vision_ctx": 0,
               "language_ctx": 4}
    model = build_model(tiny_sd, details)
    text = clip.tokenize(["X X X X dog.", "X X X X cat."])
    embeddings = model.token_embedding(text)
    with torch.no_grad():
        ref = model.encode_text_from_embeddings(embeddings, text)
        # positions 1..4 are overwritten by block 1's VPT_shallow; they still matter in block 0
        altered = embeddings.clone()
        altered[:, 5:] = 0.0  # change tokens outside the prompt slots instead
        assert not torch.allclose(model.encode_text_from_embeddings(altered, text), ref)
        ctx = torch.randn(4, 64)
        prompted = embeddings.clone()
        prompted[:, 1:5] = ctx
        with_ctx = model.encode_text_from_embeddings(prompted, text)
    assert not torch.allclose(with_ctx, ref)  # block 0 sees the learned context
    assert torch.equal(model.encode_text(text), ref)


def test_encode_text_from_embeddings_equals_encode_text(tiny_sd):
    model = build_model(tiny_sd)
    text = clip.tokenize(TEXTS)
    with torch.no_grad():
        assert torch.allclose(model.encode_text_from_embeddings(model.token_embedding(text), text),
                              model.encode_text(text))


def test_prompts_follow_autocast_dtype_and_get_gradients(tiny_sd):
    model = build_model(tiny_sd, IVLP | {"vision_depth": 2, "language_depth": 2})
    for name, param in model.named_parameters():
        param.requires_grad_("VPT" in name)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        feats = model.encode_image(images(2, 32))
        text_feats = model.encode_text(clip.tokenize(TEXTS))
    assert feats.dtype == torch.bfloat16 and text_feats.dtype == torch.bfloat16
    (feats.float().sum() + text_feats.float().sum()).backward()
    for name in model.prompt_parameter_names():
        grad = dict(model.named_parameters())[name].grad
        assert grad is not None and grad.dtype == torch.float32 and grad.abs().sum() > 0, name


def test_promptkd_student_checkpoint_keys_load_into_visual():
    """PromptKD student checkpoints name the image tower image_encoder.*: it is our visual.*."""
    sd = random_state_dict(image_resolution=32, vision_layers=12, vision_width=64,
                           vision_patch_size=16, embed_dim=32, context_length=77, text_width=64,
                           text_layers=9, seed=1)
    model = build_model(sd, {"trainer": "IVLP", "vision_depth": 9, "language_depth": 9,
                             "vision_ctx": 4, "language_ctx": 4})
    block = ["attn.in_proj_weight", "attn.in_proj_bias", "attn.out_proj.weight", "attn.out_proj.bias",
             "ln_1.weight", "ln_1.bias", "mlp.c_fc.weight", "mlp.c_fc.bias", "mlp.c_proj.weight",
             "mlp.c_proj.bias", "ln_2.weight", "ln_2.bias"]
    student_keys = ["logit_scale"] + [f"image_encoder.{k}" for k in (
        "conv1.weight", "class_embedding", "positional_embedding", "ln_pre.weight", "ln_pre.bias",
        "ln_post.weight", "ln_post.bias", "proj", "VPT")]
    student_keys += [f"image_encoder.transformer.resblocks.{i}.{k}" for i in range(12) for k in block]
    student_keys += [f"image_encoder.transformer.resblocks.{i}.VPT_shallow" for i in range(1, 9)]
    student_keys += [f"VPT_image_trans.conv1.{i}.{k}" for i in (0, 1, 3) for k in ("weight", "bias")]
    visual_shapes = {k: v.shape for k, v in model.visual.state_dict().items()}
    checkpoint = {k: torch.randn(visual_shapes[k[len("image_encoder."):]])
                  for k in student_keys if k.startswith("image_encoder.")}
    image_encoder = {k[len("image_encoder."):]: v for k, v in checkpoint.items()}
    result = model.visual.load_state_dict(image_encoder, strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    assert torch.equal(model.visual.VPT, checkpoint["image_encoder.VPT"])


def test_promptsrc_teacher_text_keys_exist():
    """PromptSRC teacher checkpoints name text_encoder.* after our text tower."""
    sd = random_state_dict(image_resolution=28, vision_layers=24, vision_width=64,
                           vision_patch_size=14, embed_dim=48, context_length=77, text_width=64,
                           text_layers=12, seed=2)
    model = build_model(sd, IVLP)
    ours = set(model.state_dict())
    teacher = {"positional_embedding", "ln_final.weight", "ln_final.bias", "text_projection",
               "visual.VPT"}
    teacher |= {f"transformer.resblocks.{i}.VPT_shallow" for i in range(1, 9)}
    teacher |= {f"visual.transformer.resblocks.{i}.VPT_shallow" for i in range(1, 9)}
    teacher |= {f"visual.transformer.resblocks.{i}.attn.in_proj_weight" for i in range(24)}
    assert teacher <= ours
    assert "visual.transformer.resblocks.0.VPT_shallow" not in ours
    assert "transformer.resblocks.9.VPT_shallow" not in ours


def test_build_model_loads_prompt_parameters_when_present(tiny_sd):
    details = IVLP | {"vision_depth": 2, "language_depth": 2}
    first = build_model(tiny_sd, details)
    second = build_model(first.state_dict(), details)
    for name in first.prompt_parameter_names():
        assert torch.equal(dict(first.named_parameters())[name], dict(second.named_parameters())[name])


def test_build_model_rejects_bad_state_dicts(tiny_sd):
    broken = dict(tiny_sd)
    del broken["visual.ln_post.bias"]
    with pytest.raises(KeyError, match="visual.ln_post.bias"):
        build_model(broken)
    extra = dict(tiny_sd, **{"visual.unknown": torch.zeros(1)})
    with pytest.raises(KeyError, match="visual.unknown"):
        build_model(extra)
    resnet = {"visual.layer1.0.conv1.weight": torch.zeros(1)}
    with pytest.raises(NotImplementedError, match="ResNet"):
        build_model(resnet)
    with pytest.raises(ValueError, match="maple_length"):  # MaPLe's design needs its prompt length
        build_model(tiny_sd, {"trainer": "MaPLe"})
    with pytest.raises(ValueError, match="unknown"):
        build_model(tiny_sd, {"trainer": "Nope"})


def test_depth_beyond_layers_prompts_every_block(tiny_sd):
    model = build_model(tiny_sd, IVLP)  # depth 9 on a 2-layer model, as in the tiny demo
    assert set(model.prompt_parameter_names()) == {
        "visual.VPT", "visual.transformer.resblocks.1.VPT_shallow",
        "transformer.resblocks.1.VPT_shallow"}
    assert torch.isfinite(model.encode_image(images(1, 32))).all()


def test_context_length_mismatch_is_reported():
    model = build_model(preset_state_dict("tiny-ctx16"))
    assert model.context_length == 16
    with pytest.raises(ValueError, match="context_length=16"):
        model.encode_text(clip.tokenize(TEXTS))
    assert model.encode_text(clip.tokenize(TEXTS, context_length=16)).shape == (3, 32)


@pytest.mark.parametrize("where,expected_rows", [("end", [0, 1, 2, -1, -1]),
                                                 ("after_first", [0, -1, -1, 3, 4])])
def test_block_prompt_replacement_positions(where, expected_rows):
    from clip.model import ResidualAttentionBlock

    block = ResidualAttentionBlock(64, 1, n_prompts=2, prompt_at=where)
    with torch.no_grad():
        block.VPT_shallow.fill_(-1.0)
    x = torch.arange(5.0).view(5, 1, 1).expand(5, 3, 64)  # (L, N, C), row value = position
    out = block._replace_prompts(x)
    assert out.shape == x.shape
    assert out[:, :, 0].tolist() == [[float(v)] * 3 for v in expected_rows]
