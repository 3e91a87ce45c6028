"""PromptSRC-style prompted CLIP (IVLP deep prompts on both towers), shared by the teacher, IVLP and PromptSRC.

Public API (key names match PromptSRC / PromptKD checkpoints, so released teachers load):

- ``ivlp_design_details(n_ctx_vision, n_ctx_text, depth_vision, depth_text) -> dict``: the
  ``design_details`` that ``clip.build_model`` needs for deep prompts.
- ``prompt_prefix_and_init(ctx_init, n_ctx)``: PromptSRC's rule for the prompt text prefix (defined in
  ``trainers.prompt_learners`` with the other text prompt learners' rules).
- ``VLPromptLearner(classnames, clip_model, n_ctx=4, ctx_init="a photo of a", n_ctx_vision=None)``:
  learnable text context ``ctx`` [n_ctx, D] plus the frozen token-embedding buffers ``token_prefix``
  [n_cls, 1, D] (start token) and ``token_suffix`` [n_cls, L - 1 - n_ctx, D] (class words, ".", end
  token, padding), and the non-persistent buffer ``tokenized_prompts`` [n_cls, L]. ``forward()`` returns
  the prompt embeddings [n_cls, L, D] = [SOS, ctx, suffix] in label order; ``set_classnames(names)``
  rebuilds the buffers for other classes (``trainers.prompt_learners.ClassTokenPrompts``). PromptSRC puts
  its frozen zero-shot vision tower at ``prompt_learner.ZS_image_encoder``; callers may attach it there.
- ``TOKEN_BUFFER_KEYS``: the state-dict keys of the frozen token buffers, dropped when a checkpoint is
  loaded (the buffers are rebuilt from the current class names).
- ``TextEncoder(clip_model)``: owns ``positional_embedding``, ``transformer``, ``ln_final``,
  ``text_projection`` (state-dict keys ``text_encoder.*``); ``forward(prompts, tokenized_prompts,
  deep_prompts=None)`` returns unnormalised text features [n, E] (``deep_prompts``: MaPLe's coupled
  text prompts).
- ``PromptedCLIP(classnames, clip_model, n_ctx_text=4, ctx_init="a photo of a", n_ctx_vision=None,
  prompt_learner=None)``: sub-modules ``prompt_learner`` (a ``VLPromptLearner`` unless another text
  prompt learner is given, e.g. CoOp's), ``image_encoder`` (the CLIP visual tower with ``VPT`` /
  ``VPT_shallow``), ``text_encoder``, parameter ``logit_scale``. Methods ``encode_text()`` (all classes,
  unnormalised; optional ``chunk_size``), ``encode_image(image)`` (unnormalised), ``class_features()``
  (normalised text features), ``logits(image, class_features)``, ``forward(image)`` ->
  ``exp(logit_scale) * norm(img) @ norm(txt).T``, ``set_classnames(names)``.
- ``is_promptsrc_trainable(name)``: PromptSRC's trainable-parameter rule.

All modules stay float32; mixed precision comes from the trainer's autocast.
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from trainers.prompt_learners import ClassTokenPrompts, prompt_prefix_and_init, random_context

# The name PromptSRC and PromptKD register their model under: the checkpoint folder of teachers and students.
CHECKPOINT_MODEL_NAME = "VLPromptLearner"
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


def is_promptsrc_trainable(name: str) -> bool:
    """PromptSRC's rule: ``prompt_learner`` names unless ``ZS_image_encoder``; elsewhere names with ``VPT``."""
    if "prompt_learner" in name:
        return "ZS_image_encoder" not in name
    return "VPT" in name


class VLPromptLearner(ClassTokenPrompts):
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
        prefix, init_from_words = prompt_prefix_and_init(ctx_init, n_ctx)
        super().__init__(clip_model, n_ctx, prefix, classnames)
        self.ctx = nn.Parameter(self.context_from_words(prefix, n_ctx) if init_from_words
                                else random_context(n_ctx, self.width))
        if verbose:
            print("Independent V-L design")
            print(f'Initial text context: "{prefix}"')
            print(f"Number of context words (tokens) for Language prompting: {n_ctx}")
            if n_ctx_vision is not None:
                print(f"Number of context words (tokens) for Vision prompting: {n_ctx_vision}")

    def forward(self) -> torch.Tensor:
        """Prompt embeddings [n_cls, L, D]: start token, the shared ``ctx``, then the class suffix."""
        return self.assemble(self.ctx)


class TextEncoder(nn.Module):
    """The CLIP text tower applied to prompt embeddings (features at the end-of-text token)."""

    def __init__(self, clip_model: nn.Module) -> None:
        super().__init__()
        self.positional_embedding = clip_model.positional_embedding
        self.transformer = clip_model.transformer
        self.ln_final = clip_model.ln_final
        self.text_projection = clip_model.text_projection

    def forward(self, prompts: torch.Tensor, tokenized_prompts: torch.Tensor,
                deep_prompts: Optional[Sequence[torch.Tensor]] = None) -> torch.Tensor:
        x = prompts + self.positional_embedding.to(prompts.dtype)
        x = x.permute(1, 0, 2)  # sequence-first inside the tower
        x = (self.transformer(x, deep_prompts) if deep_prompts else self.transformer(x)).permute(1, 0, 2)
        x = self.ln_final(x)
        end_positions = tokenized_prompts.argmax(dim=-1)
        x = x[torch.arange(x.shape[0], device=x.device), end_positions]
        return x @ self.text_projection.to(x.dtype)


class PromptedCLIP(nn.Module):
    """PromptSRC's ``CustomCLIP`` layout: prompt learner, prompted image and text towers, logit scale.

    Also CoOp's and IVLP's ``CustomCLIP`` (same attribute names): pass CoOp's learner as
    ``prompt_learner``; any learner whose ``forward()`` returns the prompt embeddings of all classes and
    that has ``tokenized_prompts`` and ``set_classnames`` fits.
    """

    def __init__(
        self,
        classnames: Sequence[str],
        clip_model: nn.Module,
        n_ctx_text: int = 4,
        ctx_init: str = "a photo of a",
        n_ctx_vision: Optional[int] = None,
        verbose: bool = True,
        prompt_learner: Optional[nn.Module] = None,
    ) -> None:
        super().__init__()
        if prompt_learner is None:
            prompt_learner = VLPromptLearner(classnames, clip_model, n_ctx=n_ctx_text, ctx_init=ctx_init,
                                             n_ctx_vision=n_ctx_vision, verbose=verbose)
        self.prompt_learner = prompt_learner
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

    def class_features(self) -> torch.Tensor:
        """Normalised text features of every class [n_cls, E] (what ``logits`` scores images against)."""
        return F.normalize(self.encode_text(), dim=-1)

    def logits(self, image: torch.Tensor, class_features: torch.Tensor) -> torch.Tensor:
        """exp(logit_scale) * norm(image features) @ class_features.T."""
        image_features = F.normalize(self.encode_image(image), dim=-1)
        return self.logit_scale.exp() * image_features @ class_features.to(image_features.dtype).t()

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """Logits over all classes: exp(logit_scale) * norm(image features) @ norm(text features).T."""
        return self.logits(image, self.class_features())

    def set_classnames(self, classnames: Sequence[str]) -> None:
        """Score ``classnames`` from now on: rebuild the class-dependent prompt parts, keep what was learnt."""
        self.prompt_learner.set_classnames(classnames)
