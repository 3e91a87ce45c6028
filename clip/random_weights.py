"""Random CLIP weights in the OpenAI state-dict layout, for tests, demos and benchmarks.

No real weights exist on the test machines, so everything that needs a CLIP
builds one from these dicts. The init follows the scale of OpenAI's
``initialize_parameters`` (so activations and logits are finite and not
degenerate) and adds small noise to LayerNorm and bias terms, so that parity
tests notice a missing bias or a swapped LayerNorm.
"""
from __future__ import annotations

import math
import os
import warnings
from typing import Dict, Iterator, Mapping, Tuple, Union

import torch

VOCAB_SIZE = 49408

PRESETS: Dict[str, dict] = {
    "ViT-B/32": dict(image_resolution=224, vision_layers=12, vision_width=768, vision_patch_size=32,
                     embed_dim=512, context_length=77, text_width=512, text_layers=12),
    "ViT-B/16": dict(image_resolution=224, vision_layers=12, vision_width=768, vision_patch_size=16,
                     embed_dim=512, context_length=77, text_width=512, text_layers=12),
    "ViT-L/14": dict(image_resolution=224, vision_layers=24, vision_width=1024, vision_patch_size=14,
                     embed_dim=768, context_length=77, text_width=768, text_layers=12),
    "ViT-L/14@336px": dict(image_resolution=336, vision_layers=24, vision_width=1024,
                           vision_patch_size=14, embed_dim=768, context_length=77, text_width=768,
                           text_layers=12),
    # Small shapes for CPU tests; real vocabulary so clip.tokenize ids are valid.
    "tiny": dict(image_resolution=32, vision_layers=2, vision_width=64, vision_patch_size=8,
                 embed_dim=32, context_length=77, text_width=64, text_layers=2),
    # A "teacher" that differs from "tiny" in every width, like ViT-L/14 vs ViT-B/16.
    "tiny-large": dict(image_resolution=32, vision_layers=3, vision_width=128, vision_patch_size=8,
                       embed_dim=48, context_length=77, text_width=128, text_layers=3),
    "tiny-ctx16": dict(image_resolution=32, vision_layers=2, vision_width=64, vision_patch_size=8,
                       embed_dim=32, context_length=16, text_width=64, text_layers=2),
}


def _block_shapes(prefix: str, width: int) -> Iterator[Tuple[str, Tuple[int, ...]]]:
    yield f"{prefix}attn.in_proj_weight", (3 * width, width)
    yield f"{prefix}attn.in_proj_bias", (3 * width,)
    yield f"{prefix}attn.out_proj.weight", (width, width)
    yield f"{prefix}attn.out_proj.bias", (width,)
    yield f"{prefix}ln_1.weight", (width,)
    yield f"{prefix}ln_1.bias", (width,)
    yield f"{prefix}mlp.c_fc.weight", (4 * width, width)
    yield f"{prefix}mlp.c_fc.bias", (4 * width,)
    yield f"{prefix}mlp.c_proj.weight", (width, 4 * width)
    yield f"{prefix}mlp.c_proj.bias", (width,)
    yield f"{prefix}ln_2.weight", (width,)
    yield f"{prefix}ln_2.bias", (width,)


def _init_std(key: str, shape: Tuple[int, ...], width: int, layers: int) -> Tuple[float, float]:
    """(mean, std) used for ``key``: OpenAI's scales, noisy LayerNorms and biases."""
    attn_std = width ** -0.5
    proj_std = width ** -0.5 * (2 * layers) ** -0.5
    if key.endswith(("ln_1.weight", "ln_2.weight", "ln_pre.weight", "ln_post.weight", "ln_final.weight")):
        return 1.0, 0.05
    if key.endswith("bias"):
        return 0.0, 0.02
    if key.endswith("in_proj_weight"):
        return 0.0, attn_std
    if key.endswith("out_proj.weight") or key.endswith("mlp.c_proj.weight"):
        return 0.0, proj_std
    if key.endswith("mlp.c_fc.weight"):
        return 0.0, (2 * width) ** -0.5
    if key == "token_embedding.weight":
        return 0.0, 0.02
    if key == "positional_embedding":
        return 0.0, 0.01
    if key == "visual.conv1.weight":
        fan_in = shape[1] * shape[2] * shape[3]
        return 0.0, fan_in ** -0.5
    # class embedding, visual positional embedding, projections
    return 0.0, width ** -0.5


def state_dict_shapes(*, image_resolution: int, vision_layers: int, vision_width: int,
                      vision_patch_size: int, embed_dim: int, context_length: int,
                      text_width: int, text_layers: int,
                      vocab_size: int = VOCAB_SIZE) -> Dict[str, Tuple[int, ...]]:
    """Key -> shape of the OpenAI ViT CLIP state dict, keys in the order of the official files."""
    if image_resolution % vision_patch_size:
        raise ValueError(f"image_resolution {image_resolution} is not a multiple of "
                         f"vision_patch_size {vision_patch_size}")
    grid = image_resolution // vision_patch_size
    shapes: Dict[str, Tuple[int, ...]] = {
        "positional_embedding": (context_length, text_width),
        "text_projection": (text_width, embed_dim),
        "logit_scale": (),
        "visual.class_embedding": (vision_width,),
        "visual.positional_embedding": (grid * grid + 1, vision_width),
        "visual.proj": (vision_width, embed_dim),
        "visual.conv1.weight": (vision_width, 3, vision_patch_size, vision_patch_size),
        "visual.ln_pre.weight": (vision_width,),
        "visual.ln_pre.bias": (vision_width,),
    }
    for i in range(vision_layers):
        shapes.update(_block_shapes(f"visual.transformer.resblocks.{i}.", vision_width))
    shapes["visual.ln_post.weight"] = (vision_width,)
    shapes["visual.ln_post.bias"] = (vision_width,)
    shapes["token_embedding.weight"] = (vocab_size, text_width)
    for i in range(text_layers):
        shapes.update(_block_shapes(f"transformer.resblocks.{i}.", text_width))
    shapes["ln_final.weight"] = (text_width,)
    shapes["ln_final.bias"] = (text_width,)
    return shapes


def random_state_dict(*, image_resolution: int, vision_layers: int, vision_width: int,
                      vision_patch_size: int, embed_dim: int, context_length: int,
                      text_width: int, text_layers: int, vocab_size: int = VOCAB_SIZE,
                      seed: int = 0) -> Dict[str, torch.Tensor]:
    """A float32 OpenAI-layout ViT CLIP state dict with random, realistically scaled values.

    Deterministic for a given ``seed`` (own generator; the global RNG is untouched).
    ``logit_scale`` is ln(100), the value of the released models.
    """
    shapes = state_dict_shapes(
        image_resolution=image_resolution, vision_layers=vision_layers, vision_width=vision_width,
        vision_patch_size=vision_patch_size, embed_dim=embed_dim, context_length=context_length,
        text_width=text_width, text_layers=text_layers, vocab_size=vocab_size)
    generator = torch.Generator().manual_seed(seed)
    state: Dict[str, torch.Tensor] = {}
    for key, shape in shapes.items():
        if key == "logit_scale":
            state[key] = torch.tensor(math.log(100.0))
            continue
        is_visual = key.startswith("visual.")
        width = vision_width if is_visual else text_width
        layers = vision_layers if is_visual else text_layers
        mean, std = _init_std(key, shape, width, layers)
        tensor = torch.empty(shape)
        tensor.normal_(mean, std, generator=generator)
        state[key] = tensor
    return state


def preset_state_dict(name: str, seed: int = 0) -> Dict[str, torch.Tensor]:
    """Random state dict for a preset architecture (``"ViT-B/16"``, ``"ViT-L/14"``, ``"tiny"``, ...)."""
    if name not in PRESETS:
        raise KeyError(f"unknown preset {name!r}; available: {sorted(PRESETS)}")
    return random_state_dict(**PRESETS[name], seed=seed)


def _nest_parameters(state_dict: Mapping[str, torch.Tensor]) -> torch.nn.Module:
    """A module tree whose ``state_dict()`` keys are exactly ``state_dict``'s keys."""
    root = torch.nn.Module()
    for key, value in state_dict.items():
        *path, leaf = key.split(".")
        module = root
        for part in path:
            if not hasattr(module, part):
                module.add_module(part, torch.nn.Module())
            module = getattr(module, part)
        module.register_parameter(leaf, torch.nn.Parameter(value.detach().clone(), requires_grad=False))
    return root


class _ArchiveRoot(torch.nn.Module):
    """Scriptable wrapper: official archives are scripted modules, so ours is one too."""

    def __init__(self, tree: torch.nn.Module):
        super().__init__()
        for name, child in tree.named_children():
            self.add_module(name, child)
        for name, param in tree.named_parameters(recurse=False):
            self.register_parameter(name, param)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


def save_torchscript_archive(state_dict: Mapping[str, torch.Tensor], path: Union[str, os.PathLike],
                             *, half: bool = True, metadata: bool = True) -> str:
    """Write a TorchScript ``.pt`` archive whose module state dict holds ``state_dict``.

    Mimics the official OpenAI files, which are TorchScript archives: tensors
    in fp16 when ``half`` and, when ``metadata``, the scalar
    ``input_resolution`` / ``context_length`` / ``vocab_size`` entries that
    loaders must drop.
    """
    tensors = {k: (v.half() if half and v.is_floating_point() else v) for k, v in state_dict.items()}
    root = _ArchiveRoot(_nest_parameters(tensors))
    if metadata:
        grid = round((tensors["visual.positional_embedding"].shape[0] - 1) ** 0.5)
        resolution = grid * tensors["visual.conv1.weight"].shape[-1]
        root.register_buffer("input_resolution", torch.tensor(resolution))
        root.register_buffer("context_length", torch.tensor(tensors["positional_embedding"].shape[0]))
        root.register_buffer("vocab_size", torch.tensor(tensors["token_embedding.weight"].shape[0]))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # TorchScript is deprecated but is the format
        scripted = torch.jit.script(root)
    path = os.fspath(path)
    scripted.save(path)
    return path
