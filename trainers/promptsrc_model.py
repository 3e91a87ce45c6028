"""PromptSRC-style prompted CLIP (IVLP deep prompts on both towers), shared by the teacher and PromptSRC.

Public API (key names match PromptSRC / PromptKD checkpoints, so released teachers load):

- ``ivlp_design_details(n_ctx_vision, n_ctx_text, depth_vision, depth_text) -> dict``: the
  ``design_details`` that ``clip.build_model`` needs for deep prompts.
- ``prompt_prefix_and_init(ctx_init, n_ctx)``: PromptSRC's rule for the prompt text prefix.
- ``VLPromptLearner(classnames, clip_model, n_ctx=4, ctx_init="a photo of a", n_ctx_vision=None)``:
  learnable text context ``ctx`` [n_ctx, D] plus the frozen token-embedding buffers ``token_prefix``
  [n_cls, 1, D] (start token) and ``token_suffix`` [n_cls, L - 1 - n_ctx, D] (class words, ".", end
  token, padding), and the non-persistent buffer ``tokenized_prompts`` [n_cls, L]. ``forward()`` returns
  the prompt embeddings [n_cls, L, D] = [SOS, ctx, suffix] in label order. PromptSRC puts its frozen
  zero-shot vision tower at ``prompt_learner.ZS_image_encoder``; callers may attach it there.
- ``TOKEN_BUFFER_KEYS``: the state-dict keys of the frozen token buffers, dropped when a checkpoint is
  loaded (the buffers are rebuilt from the current class names).
- ``TextEncoder(clip_model)``: owns ``positional_embedding``, ``transformer``, ``ln_final``,
  ``text_projection`` (state-dict keys ``text_encoder.*``); ``forward(prompts, tokenized_prompts)``
  returns unnormalised text features [n, E].
- ``PromptedCLIP(classnames, clip_model, n_ctx_text=4, ctx_init="a photo of a", n_ctx_vision=None)``:
  sub-modules ``prompt_learner``, ``image_encoder`` (the CLIP visual tower with ``VPT`` /
  ``VPT_shallow``), ``text_encoder``, parameter ``logit_scale``. Methods ``encode_text()`` (all classes,
  unnormalised; optional ``chunk_size``), ``encode_image(image)`` (unnormalised), ``forward(image)``
  -> ``exp(logit_scale) * norm(img) @ norm(txt).T``.
- ``is_promptsrc_trainable(name)``: PromptSRC's trainable-parameter rule.

All modules stay float32; mixed precision comes from the trainer's autocast.
"""
from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

import clip

# The name PromptSRC and PromptKD register their model under: the checkpoint folder of teachers and students.
CHECKPOINT_MODEL_NAME = "VLPromptLearner"
CTX_INIT_MAX_TOKENS = 4  # PromptSRC initialises ctx from CTX_INIT only when n_ctx <= 4
CTX_INIT_STD = 0.02
# Frozen token-embedding buffers of the prompt learner, rebuilt from the current class names, so every
# loader drops them from a checkpoint. PromptSRC saves ``token_prefix`` / ``token_suffix``; PromptKD's
# checkpoints may also hold ``token_prefix2`` / ``token_suffix2`` (PromptKD's teacher prompt learner).
TOKEN_BUFFER_KEYS = (
    "prompt_learner.token_prefix",
    "prompt_learner.token_prefix2",
    "prompt_learner.token_suffix",
    "prompt_learner.token_suffix2",
)


def ivlp_design_details(n_ctx_vision: int, n_ctx_text: int, depth_vision: int, depth_text: int) -> dict:
    """``design_details`` for IVLP/PromptSRC deep prompts (the keys ``clip.build_model`` reads)."""
    return {
        "trainer": "IVLP",
        "vision_depth": int(depth_vision),
        "language_depth": int(depth_text),
        "vision_ctx": int(n_ctx_vision),
        "language_ctx": int(n_ctx_text),
    }


def prompt_prefix_and_init(ctx_init: str, n_ctx: int) -> Tuple[str, bool]:
    """``(prefix, init_from_words)``: the words before the class name and whether ``ctx`` copies them.

    PromptSRC rule: with a non-empty ``ctx_init`` and ``n_ctx <= 4`` the prefix is ``ctx_init``
    (underscores as spaces) and ``ctx`` starts as its token embeddings; otherwise the prefix is
    ``n_ctx`` times ``"X"`` and ``ctx`` is random normal(0, 0.02).
    """
    if ctx_init and n_ctx <= CTX_INIT_MAX_TOKENS:
        return ctx_init.replace("_", " "), True
    return " ".join(["X"] * n_ctx), False


def class_prompt_texts(classnames: Sequence[str], prefix: str) -> List[str]:
    """One prompt string per class: ``"<prefix> <class name with spaces>."``."""
    return [f"{prefix} {name.replace('_', ' ')}." for name in classnames]


def is_promptsrc_trainable(name: str) -> bool:
    """PromptSRC's rule: ``prompt_learner`` names unless ``ZS_image_encoder``; elsewhere names with ``VPT``."""
    if "prompt_learner" in name:
        return "ZS_image_encoder" not in name
    return "VPT" in name


class VLPromptLearner(nn.Module):
    """Learnable text context shared by all classes, with frozen per-class token embeddings."""

    def __init__(
        self,
        classnames: Sequence[str],
        clip_model: nn.Module,
        n_ctx: int = 4,
        ctx_init: str = "a photo of a",
        n_ctx_vision: Optional[int] = None,
        verbose: bool = True,
    ) -> None:
        super().__init__()
        if n_ctx < 1:
            raise ValueError(f"the text prompt learner needs at least one context token, got n_ctx={n_ctx}")
        if not classnames:
            raise ValueError("the text prompt learner needs at least one class name")
        context_length = clip_model.context_length
        if 1 + n_ctx >= context_length:
            raise ValueError(f"n_ctx={n_ctx} does not fit the context length {context_length}")
        embedding = clip_model.token_embedding
        width = embedding.weight.shape[1]
        device = embedding.weight.device

        prefix, init_from_words = prompt_prefix_and_init(ctx_init, n_ctx)
        if init_from_words:
            init_ids = clip.tokenize([prefix], context_length=context_length).to(device)
            with torch.no_grad():
                ctx_vectors = embedding(init_ids)[0, 1 : 1 + n_ctx].float().clone()
        else:
            ctx_vectors = torch.empty(n_ctx, width, device=device).normal_(0.0, CTX_INIT_STD)
        self.ctx = nn.Parameter(ctx_vectors)

        texts = class_prompt_texts(classnames, prefix)
        tokenized = clip.tokenize(texts, context_length=context_length).to(device)
        with torch.no_grad():
            token_embeddings = embedding(tokenized).float()
        self.register_buffer("token_prefix", token_embeddings[:, :1].clone())
        self.register_buffer("token_suffix", token_embeddings[:, 1 + n_ctx :].clone())
        self.register_buffer("tokenized_prompts", tokenized, persistent=False)
        self.n_cls = len(classnames)
        self.n_ctx = n_ctx
        self.prompt_prefix = prefix
        self.classnames = list(classnames)
        if verbose:
            print("Independent V-L design")
            print(f'Initial text context: "{prefix}"')
            print(f"Number of context words (tokens) for Language prompting: {n_ctx}")
            if n_ctx_vision is not None:
                print(f"Number of context words (tokens) for Vision prompting: {n_ctx_vision}")

    def forward(self) -> torch.Tensor:
        """Prompt embeddings [n_cls, L, D]: start token, the shared ``ctx``, then the class suffix."""
        ctx = self.ctx.unsqueeze(0).expand(self.n_cls, -1, -1).to(self.token_prefix.dtype)
        return torch.cat([self.token_prefix, ctx, self.token_suffix], dim=1)


class TextEncoder(nn.Module):
    """The CLIP text tower applied to prompt embeddings (features at the end-of-text token)."""

    def __init__(self, clip_model: nn.Module) -> None:
        super().__init__()
        self.positional_embedding = clip_model.positional_embedding
        self.transformer = clip_model.transformer
        self.ln_final = clip_model.ln_final
        self.text_projection = clip_model.text_projection

    def forward(self, prompts: torch.Tensor, tokenized_prompts: torch.Tensor) -> torch.Tensor:
        x = prompts + self.positional_embedding.to(prompts.dtype)
        x = self.transformer(x.permute(1, 0, 2)).permute(1, 0, 2)  # sequence-first inside the tower
        x = self.ln_final(x)
        end_positions = tokenized_prompts.argmax(dim=-1)
        x = x[torch.arange(x.shape[0], device=x.device), end_positions]
        return x @ self.text_projection.to(x.dtype)


class PromptedCLIP(nn.Module):
    """PromptSRC's ``CustomCLIP`` layout: prompt learner, prompted image and text towers, logit scale."""

    def __init__(
        self,
        classnames: Sequence[str],
        clip_model: nn.Module,
        n_ctx_text: int = 4,
        ctx_init: str = "a photo of a",
        n_ctx_vision: Optional[int] = None,
        verbose: bool = True,
    ) -> None:
        super().__init__()
        self.prompt_learner = VLPromptLearner(
            classnames, clip_model, n_ctx=n_ctx_text, ctx_init=ctx_init, n_ctx_vision=n_ctx_vision, verbose=verbose
        )
        self.image_encoder = clip_model.visual
        self.text_encoder = TextEncoder(clip_model)
        self.logit_scale = clip_model.logit_scale

    @property
    def tokenized_prompts(self) -> torch.Tensor:
        return self.prompt_learner.tokenized_prompts

    def encode_text(self, chunk_size: Optional[int] = None) -> torch.Tensor:
        """Unnormalised text features of every class [n_cls, E]; ``chunk_size`` bounds memory."""
        prompts = self.prompt_learner()
        tokenized = self.tokenized_prompts
        if not chunk_size or chunk_size >= prompts.shape[0]:
            return self.text_encoder(prompts, tokenized)
        parts = [
            self.text_encoder(prompts[i : i + chunk_size], tokenized[i : i + chunk_size])
            for i in range(0, prompts.shape[0], chunk_size)
        ]
        return torch.cat(parts, dim=0)

    def encode_image(self, image: torch.Tensor) -> torch.Tensor:
        """Unnormalised image features [B, E]."""
        return self.image_encoder(image.to(self.image_encoder.conv1.weight.dtype))

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """Logits over all classes: exp(logit_scale) * norm(image features) @ norm(text features).T."""
        text_features = F.normalize(self.encode_text(), dim=-1)
        image_features = F.normalize(self.encode_image(image), dim=-1)
        return self.logit_scale.exp() * image_features @ text_features.t()
