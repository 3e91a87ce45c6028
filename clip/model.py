"""Prompt-aware CLIP (ViT) built from an OpenAI-layout state dict.

The module tree uses the OpenAI parameter names (``visual.conv1.weight``,
``transformer.resblocks.<i>.attn.in_proj_weight``, ...) so the official
checkpoints load as they are, and the deep-prompt parameters of IVLP /
PromptSRC / PromptKD carry the names those projects use (``visual.VPT``,
``visual.transformer.resblocks.<i>.VPT_shallow``,
``transformer.resblocks.<i>.VPT_shallow``) so their checkpoints load too.

Two kinds of deep prompts:

* owned (``design_details["trainer"]`` ``"IVLP"`` / ``"VPT"``): the towers hold
  the prompt parameters themselves, as above;
* coupled (``"MaPLe"``): the towers hold no prompt parameters; MaPLe's prompt
  learner computes the prompts (the visual ones are projections of the text
  ones) and passes them in: ``encode_image(image, prompts, deep_prompts)`` and
  ``encode_text_from_embeddings(embeddings, tokens, deep_prompts)``. Each
  prompt tensor has ``maple_length`` rows and is shared by the whole batch.

Either way the same positions are used: visual prompts are appended after the
patch tokens and the text context sits right after the start token; block
``i`` (``1 <= i < depth``) replaces them with its own prompt ``i - 1``.

Design decisions:

* Parameters stay float32; mixed precision is the trainer's job (autocast).
  Prompt tokens are cast to the dtype of the activations they join, so
  float32, bfloat16 and float16 autocast all work. The prompt-learning
  projects instead cast the model to float16 at build time and the prompts
  with ``.half()`` in the forward, which is why only their fp16 mode runs
  ("CLIP: fp16 model" in docs/compatibility.md).
* Attention runs through ``torch.nn.functional.scaled_dot_product_attention``;
  the text tower's causal mask is expressed with ``is_causal=True``.
* ``Transformer.forward`` takes sequence-first tensors ``(L, N, C)`` like
  OpenAI's module, so prompt-learner code that permutes ``NLD -> LND``
  around ``clip_model.transformer`` keeps working.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Mapping, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

HEAD_WIDTH = 64  # every OpenAI CLIP tower uses 64-dimensional attention heads
PROMPT_INIT_STD = 0.02
PROMPT_TRAINERS = ("IVLP", "VPT")
COUPLED_PROMPT_TRAINERS = ("MaPLe",)
PLAIN_TRAINERS = ("CoOp", "CoCoOp", "ZeroshotCLIP", "CLIP")
SCALAR_METADATA_KEYS = ("input_resolution", "context_length", "vocab_size")


class LayerNorm(nn.LayerNorm):
    """LayerNorm computed in float32 and cast back to the input dtype (as OpenAI's)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.layer_norm(x.float(), self.normalized_shape, self.weight.float(),
                           self.bias.float(), self.eps)
        return out.to(x.dtype)


class QuickGELU(nn.Module):
    """x * sigmoid(1.702 x): the activation the OpenAI CLIP weights were trained with."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(1.702 * x)


class SelfAttention(nn.Module):
    """Multi-head self-attention on ``(L, N, C)`` input through SDPA.

    Parameter names match ``nn.MultiheadAttention`` (``in_proj_weight`` packed
    q, k, v rows; ``in_proj_bias``; ``out_proj``) so OpenAI weights load.
    """

    def __init__(self, width: int, heads: int):
        super().__init__()
        if width % heads:
            raise ValueError(f"attention width {width} is not divisible by {heads} heads")
        self.width = width
        self.heads = heads
        self.in_proj_weight = nn.Parameter(torch.empty(3 * width, width))
        self.in_proj_bias = nn.Parameter(torch.empty(3 * width))
        self.out_proj = nn.Linear(width, width)

    def forward(self, x: torch.Tensor, causal: bool = False) -> torch.Tensor:
        seq_len, batch, width = x.shape
        head_dim = width // self.heads
        qkv = F.linear(x, self.in_proj_weight, self.in_proj_bias)
        # (L, N, 3C) -> (3, N, heads, L, head_dim)
        qkv = qkv.view(seq_len, batch, 3, self.heads, head_dim).permute(2, 1, 3, 0, 4)
        out = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2], is_causal=causal)
        # (N, heads, L, head_dim) -> (L, N, C)
        out = out.permute(2, 0, 1, 3).reshape(seq_len, batch, width)
        return self.out_proj(out)


class ResidualAttentionBlock(nn.Module):
    """Pre-LN transformer block, optionally owning a deep prompt ``VPT_shallow``.

    A prompted block replaces the prompt tokens of the incoming sequence before
    attention, with its own ``VPT_shallow`` or with prompts passed to
    ``forward`` (MaPLe): for the vision tower the *last* ``n`` tokens, for the
    text tower positions ``1 .. n`` (right after the start token), where ``n``
    is the number of prompt rows.
    """

    def __init__(self, width: int, heads: int, n_prompts: int = 0,
                 prompt_at: str = "end", causal: bool = False):
        super().__init__()
        if prompt_at not in ("end", "after_first"):
            raise ValueError(f"prompt_at must be 'end' or 'after_first', got {prompt_at!r}")
        self.attn = SelfAttention(width, heads)
        self.ln_1 = LayerNorm(width)
        self.mlp = nn.Sequential(OrderedDict([
            ("c_fc", nn.Linear(width, 4 * width)),
            ("gelu", QuickGELU()),
            ("c_proj", nn.Linear(4 * width, width)),
        ]))
        self.ln_2 = LayerNorm(width)
        self.causal = causal
        self.prompt_at = prompt_at
        self.n_prompts = n_prompts
        if n_prompts > 0:
            self.VPT_shallow = nn.Parameter(torch.empty(n_prompts, width))

    def _replace_prompts(self, x: torch.Tensor, prompts: Optional[torch.Tensor] = None) -> torch.Tensor:
        if prompts is None:
            prompts = self.VPT_shallow
        n = prompts.shape[0]
        prompts = prompts.to(x.dtype).unsqueeze(1).expand(-1, x.shape[1], -1)
        if self.prompt_at == "end":
            return torch.cat([x[:-n], prompts], dim=0)
        return torch.cat([x[:1], prompts, x[1 + n:]], dim=0)

    def forward(self, x: torch.Tensor, prompts: Optional[torch.Tensor] = None) -> torch.Tensor:
        """``prompts`` ``(n, C)``: this block's coupled prompts (only for blocks without ``VPT_shallow``)."""
        if prompts is not None or self.n_prompts:
            x = self._replace_prompts(x, prompts)
        x = x + self.attn(self.ln_1(x), causal=self.causal)
        x = x + self.mlp(self.ln_2(x))
        return x


class Transformer(nn.Module):
    """Stack of blocks on sequence-first ``(L, N, C)`` input.

    With ``prompt_depth = d > 0``, blocks ``1 .. d-1`` own a ``VPT_shallow``
    parameter (block 0's prompts come from the input: ``visual.VPT`` or the text
    prompt learner's context). Depth 0 or 1 gives no block parameters; a depth
    larger than ``layers`` prompts blocks ``1 .. layers-1``.

    Coupled prompts: ``forward(x, deep_prompts)`` gives block ``i`` the prompt
    ``deep_prompts[i - 1]`` for ``1 <= i <= len(deep_prompts)``; prompts beyond
    the last block are not used (as in MaPLe, whose depth may exceed the layers).
    """

    def __init__(self, width: int, layers: int, heads: int, prompt_depth: int = 0,
                 n_prompts: int = 0, prompt_at: str = "end", causal: bool = False):
        super().__init__()
        # A depth above the layer count prompts every block (as IVLP / PromptSRC do), so
        # the depth-9 configs also run on the small test models.
        self.width = width
        self.layers = layers
        self.resblocks = nn.Sequential(*[
            ResidualAttentionBlock(
                width, heads,
                n_prompts=n_prompts if 0 < i < prompt_depth else 0,
                prompt_at=prompt_at, causal=causal)
            for i in range(layers)
        ])
        self.owns_prompts = any(block.n_prompts for block in self.resblocks)

    def forward(self, x: torch.Tensor, deep_prompts: Optional[Sequence[torch.Tensor]] = None) -> torch.Tensor:
        if not deep_prompts:
            return self.resblocks(x)
        if self.owns_prompts:
            raise ValueError("this tower owns its deep prompts (VPT_shallow); it takes no coupled prompts")
        for i, block in enumerate(self.resblocks):
            x = block(x, deep_prompts[i - 1] if 0 < i <= len(deep_prompts) else None)
        return x


class VisionTransformer(nn.Module):
    """ViT image tower; with ``prompt_depth > 0`` it appends ``VPT`` tokens after the patches."""

    def __init__(self, input_resolution: int, patch_size: int, width: int, layers: int,
                 heads: int, output_dim: int, prompt_depth: int = 0, n_prompts: int = 0):
        super().__init__()
        if input_resolution % patch_size:
            raise ValueError(f"image size {input_resolution} is not a multiple of patch size {patch_size}")
        if prompt_depth > 0 and n_prompts <= 0:
            raise ValueError(f"vision prompt depth {prompt_depth} needs vision_ctx > 0, got {n_prompts}")
        self.input_resolution = input_resolution
        self.output_dim = output_dim
        self.patch_size = patch_size
        self.prompt_depth = prompt_depth
        self.n_prompts = n_prompts if prompt_depth > 0 else 0
        grid = input_resolution // patch_size
        self.conv1 = nn.Conv2d(3, width, kernel_size=patch_size, stride=patch_size, bias=False)
        self.class_embedding = nn.Parameter(torch.empty(width))
        self.positional_embedding = nn.Parameter(torch.empty(grid * grid + 1, width))
        self.ln_pre = LayerNorm(width)
        if self.n_prompts:
            self.VPT = nn.Parameter(torch.empty(self.n_prompts, width))
        self.transformer = Transformer(width, layers, heads, prompt_depth=prompt_depth,
                                       n_prompts=self.n_prompts, prompt_at="end")
        self.ln_post = LayerNorm(width)
        self.proj = nn.Parameter(torch.empty(width, output_dim))

    def forward(self, x: torch.Tensor, prompts: Optional[torch.Tensor] = None,
                deep_prompts: Optional[Sequence[torch.Tensor]] = None) -> torch.Tensor:
        """Image features ``(N, output_dim)``.

        ``prompts`` ``(n, W)`` (coupled prompts, MaPLe) are appended after the patch tokens like
        ``VPT``; ``deep_prompts`` replace them in blocks ``1 .. len(deep_prompts)``.
        """
        if prompts is not None and self.n_prompts:
            raise ValueError("this vision tower owns its prompts (VPT); it takes no coupled prompts")
        if deep_prompts and prompts is None:
            raise ValueError("deep visual prompts replace the appended prompt tokens: pass `prompts` too")
        x = self.conv1(x)                                   # (N, W, g, g)
        x = x.flatten(2).transpose(1, 2)                    # (N, g*g, W)
        cls = self.class_embedding.to(x.dtype).expand(x.shape[0], 1, -1)
        x = torch.cat([cls, x], dim=1)
        x = x + self.positional_embedding.to(x.dtype)
        appended = self.VPT if self.n_prompts else prompts
        if appended is not None:
            x = torch.cat([x, appended.to(x.dtype).expand(x.shape[0], -1, -1)], dim=1)
        x = self.ln_pre(x)
        # Sequence-first and contiguous: strided activations make every matmul copy.
        x = self.transformer(x.transpose(0, 1).contiguous(), deep_prompts)
        x = self.ln_post(x[0])
        return x @ self.proj.to(x.dtype)


class CLIP(nn.Module):
    """Image and text towers with OpenAI's names, plus deep-prompt support.

    ``coupled_prompts`` is MaPLe's prompt length (``design_details["maple_length"]``) when the model
    takes coupled prompts, else 0.
    """

    def __init__(self, embed_dim: int, image_resolution: int, vision_layers: int,
                 vision_width: int, vision_patch_size: int, context_length: int,
                 vocab_size: int, transformer_width: int, transformer_heads: int,
                 transformer_layers: int, design_details: Optional[Mapping] = None):
        super().__init__()
        prompts = prompt_settings(design_details)
        self.design_details = dict(design_details) if design_details else None
        self.coupled_prompts = prompts["maple_length"]
        self.context_length = context_length
        self.vocab_size = vocab_size
        self.visual = VisionTransformer(
            input_resolution=image_resolution, patch_size=vision_patch_size,
            width=vision_width, layers=vision_layers, heads=max(vision_width // HEAD_WIDTH, 1),
            output_dim=embed_dim, prompt_depth=prompts["vision_depth"],
            n_prompts=prompts["vision_ctx"])
        if prompts["language_depth"] > 1 and prompts["language_ctx"] <= 0:
            raise ValueError("language prompt depth > 1 needs language_ctx > 0")
        if 1 + prompts["language_ctx"] > context_length and prompts["language_depth"] > 1:
            raise ValueError(f"language_ctx {prompts['language_ctx']} does not fit context length {context_length}")
        self.transformer = Transformer(
            transformer_width, transformer_layers, transformer_heads,
            prompt_depth=prompts["language_depth"], n_prompts=prompts["language_ctx"],
            prompt_at="after_first", causal=True)
        self.token_embedding = nn.Embedding(vocab_size, transformer_width)
        self.positional_embedding = nn.Parameter(torch.empty(context_length, transformer_width))
        self.ln_final = LayerNorm(transformer_width)
        self.text_projection = nn.Parameter(torch.empty(transformer_width, embed_dim))
        self.logit_scale = nn.Parameter(torch.empty(()))

    @property
    def dtype(self) -> torch.dtype:
        return self.visual.conv1.weight.dtype

    def encode_image(self, image: torch.Tensor, prompts: Optional[torch.Tensor] = None,
                     deep_prompts: Optional[Sequence[torch.Tensor]] = None) -> torch.Tensor:
        """Image features ``(N, embed_dim)`` (not normalised).

        ``prompts`` / ``deep_prompts``: MaPLe's coupled visual prompts (``(n, W)`` each), for a
        model built with the MaPLe design.
        """
        if prompts is not None or deep_prompts:
            self._check_coupled([prompts] if prompts is not None else [], deep_prompts)
        return self.visual(image.type(self.dtype), prompts, deep_prompts)

    def encode_text(self, text: torch.Tensor) -> torch.Tensor:
        """Text features ``(N, embed_dim)`` from token ids ``(N, context_length)``."""
        self._check_context(text.shape[-1])
        return self.encode_text_from_embeddings(self.token_embedding(text), text)

    def encode_text_from_embeddings(self, prompt_embeddings: torch.Tensor,
                                    tokenized_prompts: torch.Tensor,
                                    deep_prompts: Optional[Sequence[torch.Tensor]] = None) -> torch.Tensor:
        """Text features from token embeddings ``(N, L, D)`` (learned context included).

        ``tokenized_prompts`` ``(N, L)`` only locates the end-of-text token
        (its id is the largest, so the argmax). ``deep_prompts``: MaPLe's coupled text prompts
        (``(n, D)`` each; the context occupies positions ``1 .. n`` of the embeddings).
        """
        self._check_context(prompt_embeddings.shape[1])
        if deep_prompts:
            self._check_coupled([], deep_prompts)
        x = prompt_embeddings + self.positional_embedding.to(prompt_embeddings.dtype)
        x = self.transformer(x.transpose(0, 1).contiguous(), deep_prompts)  # (L, N, D)
        eot = tokenized_prompts.argmax(dim=-1).to(x.device)
        x = x[eot, torch.arange(x.shape[1], device=x.device)]         # (N, D)
        x = self.ln_final(x)  # per-token LayerNorm: applying it after the gather is equivalent
        return x @ self.text_projection.to(x.dtype)

    def forward(self, image: torch.Tensor, text: torch.Tensor):
        """``(logits_per_image, logits_per_text)`` with ``exp(logit_scale)`` temperature."""
        image_features = F.normalize(self.encode_image(image), dim=-1)
        text_features = F.normalize(self.encode_text(text), dim=-1)
        logits_per_image = self.logit_scale.exp() * image_features @ text_features.t()
        return logits_per_image, logits_per_image.t()

    def _check_context(self, length: int) -> None:
        if length != self.context_length:
            raise ValueError(
                f"text sequences have length {length} but this model's context length is "
                f"{self.context_length}; tokenize with context_length={self.context_length}")

    def _check_coupled(self, prompts: Sequence[torch.Tensor],
                       deep_prompts: Optional[Sequence[torch.Tensor]]) -> None:
        """Coupled prompts need the MaPLe design, and each must have ``maple_length`` rows."""
        if not self.coupled_prompts:
            raise ValueError("coupled prompts need a model built with design_details "
                             "{'trainer': 'MaPLe', 'maple_length': n}")
        for tensor in list(prompts) + list(deep_prompts or []):
            if tensor.dim() != 2 or tensor.shape[0] != self.coupled_prompts:
                raise ValueError(f"coupled prompts must have shape ({self.coupled_prompts}, width) "
                                 f"(maple_length = {self.coupled_prompts}), got {tuple(tensor.shape)}")

    def prompt_parameter_names(self) -> list:
        """Names of the deep-prompt parameters (``VPT`` / ``VPT_shallow``)."""
        return [name for name, _ in self.named_parameters() if "VPT" in name]

    def reset_prompts(self, std: float = PROMPT_INIT_STD) -> None:
        """Initialise every prompt parameter from normal(0, std), the prompt projects' init."""
        with torch.no_grad():
            for name, param in self.named_parameters():
                if "VPT" in name:
                    param.normal_(0.0, std)


def prompt_settings(design_details: Optional[Mapping]) -> dict:
    """Normalise ``design_details`` into the prompt numbers (all 0 = plain CLIP).

    ``trainer`` ``"IVLP"`` / ``"VPT"`` enable owned deep prompts (``vision_depth``,
    ``language_depth``, ``vision_ctx``, ``language_ctx``); ``"MaPLe"`` builds towers that
    take coupled prompts of ``maple_length`` rows (its prompt learner owns them, the
    four numbers are ignored as in MaPLe); ``"CoOp"``, ``"CoCoOp"`` (and ``None``)
    give plain CLIP.
    """
    settings = {"vision_depth": 0, "language_depth": 0, "vision_ctx": 0, "language_ctx": 0,
                "maple_length": 0}
    if not design_details:
        return settings
    trainer = design_details.get("trainer")
    known = PROMPT_TRAINERS + COUPLED_PROMPT_TRAINERS + PLAIN_TRAINERS
    if trainer not in known and trainer is not None:
        raise ValueError(f"design_details['trainer'] = {trainer!r} is unknown; expected one of {known}")
    if trainer in COUPLED_PROMPT_TRAINERS:
        length = int(design_details.get("maple_length", 0) or 0)
        if length < 1:
            raise ValueError(f"design_details for {trainer} needs 'maple_length' >= 1 (the number of "
                             f"coupled prompt tokens, TRAINER.MAPLE.N_CTX), got {length}")
        settings["maple_length"] = length
        return settings
    if trainer not in PROMPT_TRAINERS:
        return settings
    for key in ("vision_depth", "language_depth", "vision_ctx", "language_ctx"):
        value = int(design_details.get(key, 0) or 0)
        if value < 0:
            raise ValueError(f"design_details[{key!r}] must be >= 0, got {value}")
        settings[key] = value
    if settings["vision_depth"] == 0:
        settings["vision_ctx"] = 0
    if settings["language_depth"] == 0:
        settings["language_ctx"] = 0
    return settings


def architecture_from_state_dict(state_dict: Mapping[str, torch.Tensor]) -> dict:
    """Infer the constructor arguments of :class:`CLIP` from OpenAI-layout keys."""
    if "visual.proj" not in state_dict:
        if any(k.startswith("visual.layer1.") for k in state_dict):
            raise NotImplementedError(
                "ResNet CLIP checkpoints (RN50, RN101, ...) are not supported; use a ViT model")
        raise KeyError("state dict has no 'visual.proj': not an OpenAI-layout ViT CLIP state dict")
    required = ("visual.conv1.weight", "visual.positional_embedding", "text_projection",
                "positional_embedding", "token_embedding.weight", "ln_final.weight")
    missing = [k for k in required if k not in state_dict]
    if missing:
        raise KeyError(f"state dict lacks required CLIP keys: {missing}")
    conv = state_dict["visual.conv1.weight"]
    patch = conv.shape[-1]
    grid = round((state_dict["visual.positional_embedding"].shape[0] - 1) ** 0.5)
    vision_layers = len([k for k in state_dict
                         if k.startswith("visual.") and k.endswith(".attn.in_proj_weight")])
    text_layers = len({k.split(".")[2] for k in state_dict if k.startswith("transformer.resblocks.")})
    text_width = state_dict["ln_final.weight"].shape[0]
    return dict(
        embed_dim=state_dict["text_projection"].shape[1],
        image_resolution=patch * grid,
        vision_layers=vision_layers,
        vision_width=conv.shape[0],
        vision_patch_size=patch,
        context_length=state_dict["positional_embedding"].shape[0],
        vocab_size=state_dict["token_embedding.weight"].shape[0],
        transformer_width=text_width,
        transformer_heads=max(text_width // HEAD_WIDTH, 1),
        transformer_layers=text_layers,
    )


def build_model(state_dict: Mapping[str, torch.Tensor],
                design_details: Optional[Mapping] = None, *, take_tensors: bool = False) -> CLIP:
    """Build a float32 :class:`CLIP` in eval mode from an OpenAI-layout state dict.

    The architecture is inferred from the keys. Prompt parameters absent from
    ``state_dict`` are initialised from normal(0, 0.02); any other missing key,
    or any unexpected key, raises ``KeyError`` naming them, instead of the
    silent non-strict fallback of the prompt-learning projects' builder
    ("CLIP: non-strict build" in docs/compatibility.md).

    By default the weights are copied into the model. ``take_tensors=True``
    makes the model's parameters and buffers *be* the float32 tensors of
    ``state_dict`` (no second copy of the weights while the model is built:
    1.7 GB for ViT-L/14); the values are the same either way. Only for a state
    dict that nothing else uses afterwards: the model and the dict then share
    memory.
    """
    weights = {k: v for k, v in state_dict.items() if k not in SCALAR_METADATA_KEYS}
    arch = architecture_from_state_dict(weights)
    with torch.device("meta"):
        model = CLIP(**arch, design_details=design_details)
    model.to_empty(device="cpu")
    model.reset_prompts()
    if take_tensors:
        # Tensors stored in another dtype (the official fp16 archives) are converted here, one by one,
        # and a parameter taken from the dict must be contiguous like the one it replaces.
        weights = {k: v.float().contiguous() if v.is_floating_point() else v for k, v in weights.items()}
    result = model.load_state_dict(weights, strict=False, assign=take_tensors)
    missing = [k for k in result.missing_keys if "VPT" not in k]
    if missing or result.unexpected_keys:
        raise KeyError(
            "state dict does not match the CLIP architecture inferred from it: "
            f"missing keys {missing[:10]}{' ...' if len(missing) > 10 else ''}, "
            f"unexpected keys {result.unexpected_keys[:10]}"
            f"{' ...' if len(result.unexpected_keys) > 10 else ''}")
    return model.float().eval()

