"""A hand-written CLIP forward for the prompt tests: every step spelled out (LayerNorm, attention with an
explicit softmax and causal mask, QuickGELU MLP), with the prompt tokens placed by hand.

Only the weights are read from the model under test (through its parameter names), so a test that compares
the model with these functions checks where the prompts enter (which tokens, which blocks) independently of
the model's own block code.
"""
from __future__ import annotations

import math
from typing import Optional, Sequence

import torch


def layer_norm(x: torch.Tensor, ln) -> torch.Tensor:
    mean = x.mean(-1, keepdim=True)
    var = ((x - mean) ** 2).mean(-1, keepdim=True)
    return (x - mean) / torch.sqrt(var + ln.eps) * ln.weight + ln.bias


def attention(x: torch.Tensor, attn, causal: bool) -> torch.Tensor:
    """Multi-head self-attention on (N, L, C)."""
    n, length, width = x.shape
    heads = attn.heads
    head_dim = width // heads
    qkv = x @ attn.in_proj_weight.t() + attn.in_proj_bias
    q, k, v = qkv.split(width, dim=-1)

    def split(t):
        return t.view(n, length, heads, head_dim).transpose(1, 2)

    scores = split(q) @ split(k).transpose(-1, -2) / math.sqrt(head_dim)
    if causal:
        mask = torch.full((length, length), float("-inf")).triu(1)
        scores = scores + mask
    out = scores.softmax(-1) @ split(v)
    out = out.transpose(1, 2).reshape(n, length, width)
    return out @ attn.out_proj.weight.t() + attn.out_proj.bias


def block(x: torch.Tensor, blk, causal: bool) -> torch.Tensor:
    x = x + attention(layer_norm(x, blk.ln_1), blk.attn, causal)
    h = layer_norm(x, blk.ln_2) @ blk.mlp.c_fc.weight.t() + blk.mlp.c_fc.bias
    h = h * torch.sigmoid(1.702 * h)
    return x + h @ blk.mlp.c_proj.weight.t() + blk.mlp.c_proj.bias


def image_features(visual, image: torch.Tensor, appended: Optional[torch.Tensor] = None,
                   deep: Sequence[torch.Tensor] = ()) -> torch.Tensor:
    """Unnormalised image features; ``appended`` [n, W] follow the patch tokens (after the positional
    embedding); before block i >= 1 the last n tokens become ``deep[i - 1]`` (while there is one)."""
    patches = torch.nn.functional.conv2d(image, visual.conv1.weight, stride=visual.conv1.stride)
    patches = patches.flatten(2).transpose(1, 2)
    cls = visual.class_embedding.expand(image.shape[0], 1, -1)
    x = torch.cat([cls, patches], dim=1) + visual.positional_embedding
    if appended is not None:
        x = torch.cat([x, appended.expand(image.shape[0], -1, -1)], dim=1)
    x = layer_norm(x, visual.ln_pre)
    for i, blk in enumerate(visual.transformer.resblocks):
        if 1 <= i <= len(deep):
            prompt = deep[i - 1]
            x = torch.cat([x[:, :-prompt.shape[0]], prompt.expand(x.shape[0], -1, -1)], dim=1)
        x = block(x, blk, causal=False)
    return layer_norm(x[:, 0], visual.ln_post) @ visual.proj


def text_features(clip_model, embeddings: torch.Tensor, tokens: torch.Tensor,
                  deep: Sequence[torch.Tensor] = ()) -> torch.Tensor:
    """Unnormalised text features of prompt embeddings [N, L, D]; before block i >= 1 positions
    1..n become ``deep[i - 1]`` (while there is one); features at the end token (argmax of ``tokens``)."""
    x = embeddings + clip_model.positional_embedding
    for i, blk in enumerate(clip_model.transformer.resblocks):
        if 1 <= i <= len(deep):
            prompt = deep[i - 1]
            n = prompt.shape[0]
            x = torch.cat([x[:, :1], prompt.expand(x.shape[0], -1, -1), x[:, 1 + n:]], dim=1)
        x = block(x, blk, causal=True)
    x = layer_norm(x, clip_model.ln_final)
    return x[torch.arange(x.shape[0]), tokens.argmax(-1)] @ clip_model.text_projection


def normalize(x: torch.Tensor) -> torch.Tensor:
    return x / x.norm(dim=-1, keepdim=True)


def owned_deep_prompts(transformer) -> list:
    """The ``VPT_shallow`` parameters of blocks 1, 2, ... (IVLP's own deep prompts), in block order."""
    return [blk.VPT_shallow for blk in list(transformer.resblocks)[1:] if getattr(blk, "n_prompts", 0)]
