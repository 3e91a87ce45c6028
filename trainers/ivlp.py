"""IVLP: independent deep prompts on both CLIP towers, trained with labels (the baseline of MaPLe and
PromptSRC: PromptSRC's model without its regularisers).

Model: ``trainers.promptsrc_model.PromptedCLIP`` on a CLIP built with IVLP's deep prompts
(``ivlp_design_details``): the text context ``prompt_learner.ctx`` at positions 1..N_CTX_TEXT, visual
prompts ``image_encoder.VPT`` appended after the patch tokens, and per-block prompts
``{image,text}_encoder.transformer.resblocks.<i>.VPT_shallow`` replacing them in blocks
1 .. depth-1. The two towers' prompts are independent. Loss: cross-entropy.

Trained: names containing ``prompt_learner`` or ``VPT``. The optimiser covers the whole model, which is
registered and saved as ``VLPromptLearner`` (IVLP's folder; whole-model state dict with IVLP's keys;
``prompt_learner.token_prefix`` / ``token_suffix`` are dropped on load).

Config: ``TRAINER.IVLP.{N_CTX_VISION, N_CTX_TEXT, CTX_INIT, PREC, PROMPT_DEPTH_VISION,
PROMPT_DEPTH_TEXT}``; ``configs/trainers/IVLP/``. Vision depth 0 gives deep language-only prompting.
Protocols, final evaluation and results.json: ``trainers.supervised``.
"""
from __future__ import annotations

from typing import Sequence

from torch import nn

from dassl.engine import TRAINER_REGISTRY
from dassl.utils import UserError
from trainers.backbone import load_backbone
from trainers.promptsrc_model import (CHECKPOINT_MODEL_NAME, TOKEN_BUFFER_KEYS, PromptedCLIP, is_promptsrc_trainable,
                                      ivlp_design_details)
from trainers.supervised import SupervisedPromptTrainer


def ivlp_design_from_cfg(ivlp_cfg) -> dict:
    """``design_details`` of IVLP's CLIP from a ``TRAINER.IVLP``-like node."""
    return ivlp_design_details(ivlp_cfg.N_CTX_VISION, ivlp_cfg.N_CTX_TEXT, ivlp_cfg.PROMPT_DEPTH_VISION,
                               ivlp_cfg.PROMPT_DEPTH_TEXT)


@TRAINER_REGISTRY.register()
class IVLP(SupervisedPromptTrainer):
    """IVLP; see the module docstring."""

    PRECISION_KEY = "TRAINER.IVLP.PREC"
    MODEL_NAME = CHECKPOINT_MODEL_NAME
    CHECKPOINT_IGNORED_KEYS = TOKEN_BUFFER_KEYS

    def check_cfg(self, cfg) -> None:
        super().check_cfg(cfg)
        if cfg.TRAINER.IVLP.PROMPT_DEPTH_TEXT < 1:
            raise UserError("TRAINER.IVLP.PROMPT_DEPTH_TEXT must be >= 1 (IVLP always learns the text context); "
                            "vision-only deep prompting is not an IVLP configuration")

    def build_custom_clip(self, cfg, classnames: Sequence[str]) -> nn.Module:
        ivlp = cfg.TRAINER.IVLP
        clip_model = load_backbone(cfg, ivlp_design_from_cfg(ivlp))
        return PromptedCLIP(classnames, clip_model, n_ctx_text=ivlp.N_CTX_TEXT, ctx_init=ivlp.CTX_INIT,
                            n_ctx_vision=ivlp.N_CTX_VISION)

    def is_trainable(self, name: str) -> bool:
        return is_promptsrc_trainable(name)


__all__ = ["IVLP", "ivlp_design_from_cfg"]
