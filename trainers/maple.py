"""MaPLe: multi-modal prompt learning, vision prompts coupled to the text prompts (Khattak et al., CVPR 2023).

Model (:class:`MaPLeCLIP`, the ``CustomCLIP`` layout ``prompt_learner``, ``image_encoder``,
``text_encoder``, ``logit_scale``) on a CLIP built with MaPLe's design (``clip`` coupled prompts), with
``trainers.prompt_learners.MultiModalPromptLearner``:

- text: ``ctx`` [N_CTX, D] at positions 1..N_CTX of every class prompt; in text block k (1 <= k < J)
  those positions are replaced by ``compound_prompts_text.<k-1>``;
- vision: ``proj(ctx)`` is appended after the patch tokens; in vision block k the last N_CTX tokens are
  replaced by ``compound_prompt_projections.<k-1>(compound_prompts_text.<k-1>)``.

J = ``PROMPT_DEPTH`` counts the input layer (J = 1 is shallow MaPLe); deep prompts beyond the model's last
block are unused, as in MaPLe. Loss: cross-entropy.

Trained: names containing ``prompt_learner`` or ``VPT`` (the prompt learner). The optimiser covers the whole
model, registered and saved as ``MultiModalPromptLearner`` (MaPLe's folder; whole-model state dict with
MaPLe's keys; ``prompt_learner.token_prefix`` / ``token_suffix`` are dropped on load), so MaPLe's released
weights load. ``proj`` and the deep projections map the text width to the vision width of the CLIP in use
(MaPLe hard-codes 512 -> 768, the ViT-B widths).

Config: ``TRAINER.MAPLE.{N_CTX, CTX_INIT, PREC, PROMPT_DEPTH}``; ``configs/trainers/MaPLe/``.
Protocols, final evaluation and results.json: ``trainers.supervised``.
"""
from __future__ import annotations

from typing import List, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from dassl.engine import TRAINER_REGISTRY
from dassl.utils import UserError
from trainers.backbone import load_backbone
from trainers.prompt_learners import MultiModalPromptLearner
from trainers.promptsrc_model import TOKEN_BUFFER_KEYS, TextEncoder, is_promptsrc_trainable
from trainers.supervised import SupervisedPromptTrainer

CHECKPOINT_MODEL_NAME = "MultiModalPromptLearner"

ClassFeatures = Tuple[torch.Tensor, torch.Tensor, List[torch.Tensor]]


def maple_design_details(n_ctx: int) -> dict:
    """``design_details`` of MaPLe's CLIP: towers that take ``n_ctx`` coupled prompt tokens."""
    return {"trainer": "MaPLe", "vision_depth": 0, "language_depth": 0, "vision_ctx": 0, "language_ctx": 0,
            "maple_length": int(n_ctx)}


class MaPLeCLIP(nn.Module):
    """CLIP with MaPLe's coupled vision-language prompts."""

    def __init__(self, classnames: Sequence[str], clip_model: nn.Module, n_ctx: int = 2,
                 ctx_init: str = "a photo of a", prompt_depth: int = 9, verbose: bool = True) -> None:
        super().__init__()
        if getattr(clip_model, "coupled_prompts", 0) != n_ctx:
            raise ValueError(f"MaPLe needs a CLIP built with design_details {maple_design_details(n_ctx)}")
        self.prompt_learner = MultiModalPromptLearner(classnames, clip_model, n_ctx=n_ctx, ctx_init=ctx_init,
                                                      prompt_depth=prompt_depth, verbose=verbose)
        self.image_encoder = clip_model.visual
        self.text_encoder = TextEncoder(clip_model)
        self.logit_scale = clip_model.logit_scale
        layers = min(len(clip_model.visual.transformer.resblocks), len(clip_model.transformer.resblocks))
        if verbose and prompt_depth > layers:
            print(f"Note: TRAINER.MAPLE.PROMPT_DEPTH {prompt_depth} exceeds the {layers} layers of this CLIP: "
                  f"the deep prompts of blocks {layers} and above are not used")

    @property
    def tokenized_prompts(self) -> torch.Tensor:
        return self.prompt_learner.tokenized_prompts

    def class_features(self) -> ClassFeatures:
        """``(normalised text features [n_cls, E], shallow visual prompt, deep visual prompts)``."""
        prompts, shallow_vision, deep_text, deep_vision = self.prompt_learner()
        text = F.normalize(self.text_encoder(prompts, self.tokenized_prompts, deep_text), dim=-1)
        return text, shallow_vision, deep_vision

    def logits(self, image: torch.Tensor, class_features: ClassFeatures) -> torch.Tensor:
        text, shallow_vision, deep_vision = class_features
        image = image.to(self.image_encoder.conv1.weight.dtype)
        image_features = F.normalize(self.image_encoder(image, shallow_vision, deep_vision), dim=-1)
        return self.logit_scale.exp() * image_features @ text.to(image_features.dtype).t()

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.logits(image, self.class_features())

    def set_classnames(self, classnames: Sequence[str]) -> None:
        self.prompt_learner.set_classnames(classnames)


@TRAINER_REGISTRY.register()
class MaPLe(SupervisedPromptTrainer):
    """MaPLe; see the module docstring."""

    PRECISION_KEY = "TRAINER.MAPLE.PREC"
    MODEL_NAME = CHECKPOINT_MODEL_NAME
    CHECKPOINT_IGNORED_KEYS = TOKEN_BUFFER_KEYS

    def check_cfg(self, cfg) -> None:
        super().check_cfg(cfg)
        maple = cfg.TRAINER.MAPLE
        if maple.PROMPT_DEPTH < 1:
            raise UserError(f"TRAINER.MAPLE.PROMPT_DEPTH must be >= 1 (1 = shallow MaPLe), got {maple.PROMPT_DEPTH}")
        if maple.N_CTX < 1:
            raise UserError(f"TRAINER.MAPLE.N_CTX must be >= 1, got {maple.N_CTX}")

    def build_custom_clip(self, cfg, classnames: Sequence[str]) -> nn.Module:
        maple = cfg.TRAINER.MAPLE
        clip_model = load_backbone(cfg, maple_design_details(maple.N_CTX))
        return MaPLeCLIP(classnames, clip_model, n_ctx=maple.N_CTX, ctx_init=maple.CTX_INIT,
                         prompt_depth=maple.PROMPT_DEPTH)

    def is_trainable(self, name: str) -> bool:
        return is_promptsrc_trainable(name)


__all__ = ["CHECKPOINT_MODEL_NAME", "MaPLe", "MaPLeCLIP", "maple_design_details"]
