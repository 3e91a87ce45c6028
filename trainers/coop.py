"""CoOp: a learnable text context for CLIP, trained with labels (Zhou et al., "Learning to Prompt for
Vision-Language Models", IJCV 2022).

Model: ``trainers.promptsrc_model.PromptedCLIP`` (the ``CustomCLIP`` layout: ``prompt_learner``,
``image_encoder``, ``text_encoder``, ``logit_scale``) on a CLIP without deep prompts, with CoOp's prompt
learner (``trainers.prompt_learners.CoOpPromptLearner``): ``[SOS] ctx_1 .. ctx_M [class words] . [EOS]``
(class words at the end, middle or front), ``ctx`` shared by all classes or one per class (``CSC``).
Loss: cross-entropy over the training classes; the batch accuracy is logged too (``acc``).

Only ``prompt_learner.ctx`` is trained; the optimiser, the scheduler and the checkpoints cover the prompt
learner alone, registered as ``prompt_learner``: ``<OUTPUT_DIR>/prompt_learner/model.pth.tar-<E>`` with
CoOp's keys ``ctx``, ``token_prefix``, ``token_suffix`` (the two buffers are dropped on load and rebuilt
for the current classes), so CoOp's released weights load.

Config: ``TRAINER.COOP.{N_CTX, CSC, CTX_INIT, PREC, CLASS_TOKEN_POSITION}``; ``configs/trainers/CoOp/``.
Protocols, final evaluation and results.json: ``trainers.supervised``.
"""
from __future__ import annotations

from typing import Sequence

from torch import nn

from dassl.engine import TRAINER_REGISTRY
from dassl.utils import UserError
from trainers.backbone import NO_PROMPTS, load_backbone
from trainers.prompt_learners import CLASS_TOKEN_POSITIONS, CoOpPromptLearner
from trainers.promptsrc_model import PromptedCLIP
from trainers.supervised import SupervisedPromptTrainer

CHECKPOINT_MODEL_NAME = "prompt_learner"
TOKEN_BUFFER_KEYS = ("token_prefix", "token_suffix")


def build_coop_model(cfg, classnames: Sequence[str], clip_model: nn.Module, verbose: bool = True) -> PromptedCLIP:
    """CoOp's ``CustomCLIP`` for ``classnames`` on ``clip_model`` (a CLIP without deep prompts)."""
    coop = cfg.TRAINER.COOP
    learner = CoOpPromptLearner(classnames, clip_model, n_ctx=coop.N_CTX, ctx_init=coop.CTX_INIT,
                                class_specific=coop.CSC, class_token_position=coop.CLASS_TOKEN_POSITION,
                                verbose=verbose)
    return PromptedCLIP(classnames, clip_model, prompt_learner=learner)


def is_coop_trainable(name: str) -> bool:
    """CoOp's rule: only the prompt learner is trained."""
    return "prompt_learner" in name


@TRAINER_REGISTRY.register()
class CoOp(SupervisedPromptTrainer):
    """CoOp; see the module docstring."""

    PRECISION_KEY = "TRAINER.COOP.PREC"
    MODEL_NAME = CHECKPOINT_MODEL_NAME
    CHECKPOINT_IGNORED_KEYS = TOKEN_BUFFER_KEYS
    LOGS_ACCURACY = True

    def check_cfg(self, cfg) -> None:
        super().check_cfg(cfg)
        coop = cfg.TRAINER.COOP
        if coop.CLASS_TOKEN_POSITION not in CLASS_TOKEN_POSITIONS:
            raise UserError(f"TRAINER.COOP.CLASS_TOKEN_POSITION must be one of {list(CLASS_TOKEN_POSITIONS)}, "
                            f"got {coop.CLASS_TOKEN_POSITION!r}")
        if coop.CSC and not coop.CTX_INIT and cfg.DATASET.SUBSAMPLE_CLASSES == "base":
            raise UserError("TRAINER.COOP.CSC True learns one context per training class, so it cannot score the "
                            "new classes of DATASET.SUBSAMPLE_CLASSES base: set TRAINER.COOP.CSC False or "
                            "DATASET.SUBSAMPLE_CLASSES all")

    def build_custom_clip(self, cfg, classnames: Sequence[str]) -> nn.Module:
        return build_coop_model(cfg, classnames, load_backbone(cfg, NO_PROMPTS))

    def is_trainable(self, name: str) -> bool:
        return is_coop_trainable(name)

    def trained_module(self) -> nn.Module:
        return self.model.prompt_learner


__all__ = ["CHECKPOINT_MODEL_NAME", "CoOp", "TOKEN_BUFFER_KEYS", "build_coop_model", "is_coop_trainable"]
