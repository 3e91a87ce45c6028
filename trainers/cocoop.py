"""CoCoOp: a text context conditioned on each image (Zhou et al., "Conditional Prompt Learning for
Vision-Language Models", CVPR 2022).

Model (:class:`CoCoOpCLIP`, the ``CustomCLIP`` layout ``prompt_learner``, ``image_encoder``,
``text_encoder``, ``logit_scale``) on a CLIP without deep prompts, with CoCoOp's prompt learner
(``trainers.prompt_learners.CoCoOpPromptLearner``): a meta-network maps each image's normalised feature
to a shift added to every context vector, and the text tower runs over all classes' prompts once per
image. Logit of image i and class c = ``exp(logit_scale) * norm(f_i) . norm(T_c(ctx + meta_net(norm(f_i))))``.
Loss: cross-entropy over the training classes.

Trained: ``prompt_learner.ctx`` and ``prompt_learner.meta_net.{linear1,linear2}.*``; optimiser, scheduler
and checkpoints on the prompt learner, registered as ``prompt_learner`` (CoCoOp's folder and keys:
``ctx``, ``meta_net.*``, ``token_prefix``, ``token_suffix``; the buffers are dropped on load).

Config: ``TRAINER.COCOOP.{N_CTX, CTX_INIT, PREC}``; ``configs/trainers/CoCoOp/``.
Protocols, final evaluation and results.json: ``trainers.supervised``.
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from dassl.engine import TRAINER_REGISTRY
from trainers.backbone import NO_PROMPTS, load_backbone
from trainers.coop import CHECKPOINT_MODEL_NAME, TOKEN_BUFFER_KEYS, is_coop_trainable
from trainers.prompt_learners import CoCoOpPromptLearner
from trainers.promptsrc_model import TextEncoder
from trainers.supervised import SupervisedPromptTrainer


class CoCoOpCLIP(nn.Module):
    """CLIP with CoCoOp's image-conditioned text prompts."""

    def __init__(self, classnames: Sequence[str], clip_model: nn.Module, n_ctx: int = 16, ctx_init: str = "",
                 verbose: bool = True) -> None:
        super().__init__()
        self.prompt_learner = CoCoOpPromptLearner(classnames, clip_model, n_ctx=n_ctx, ctx_init=ctx_init,
                                                  verbose=verbose)
        self.image_encoder = clip_model.visual
        self.text_encoder = TextEncoder(clip_model)
        self.logit_scale = clip_model.logit_scale

    @property
    def tokenized_prompts(self) -> torch.Tensor:
        return self.prompt_learner.tokenized_prompts

    def class_features(self) -> None:
        """Nothing to compute once: the text side depends on each image."""
        return None

    def logits(self, image: torch.Tensor, class_features: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Logits [B, n_cls]: one text-tower pass over all classes per image (memory of one image's prompts)."""
        image_features = F.normalize(self.image_encoder(image.to(self.image_encoder.conv1.weight.dtype)), dim=-1)
        contexts = self.prompt_learner(image_features)
        scale = self.logit_scale.exp()
        rows = []
        for feature, context in zip(image_features, contexts):
            text = F.normalize(self.text_encoder(self.prompt_learner.assemble(context), self.tokenized_prompts), dim=-1)
            rows.append(scale * text @ feature.to(text.dtype))
        return torch.stack(rows)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.logits(image)

    def set_classnames(self, classnames: Sequence[str]) -> None:
        self.prompt_learner.set_classnames(classnames)


@TRAINER_REGISTRY.register()
class CoCoOp(SupervisedPromptTrainer):
    """CoCoOp; see the module docstring."""

    PRECISION_KEY = "TRAINER.COCOOP.PREC"
    MODEL_NAME = CHECKPOINT_MODEL_NAME
    CHECKPOINT_IGNORED_KEYS = TOKEN_BUFFER_KEYS

    def build_custom_clip(self, cfg, classnames: Sequence[str]) -> nn.Module:
        cocoop = cfg.TRAINER.COCOOP
        return CoCoOpCLIP(classnames, load_backbone(cfg, NO_PROMPTS), n_ctx=cocoop.N_CTX, ctx_init=cocoop.CTX_INIT)

    def is_trainable(self, name: str) -> bool:
        return is_coop_trainable(name)

    def trained_module(self) -> nn.Module:
        return self.model.prompt_learner


__all__ = ["CoCoOp", "CoCoOpCLIP"]
