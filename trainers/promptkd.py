"""PromptKD (CVPR 2024), faithful to the original.

Student = CLIP ViT-B/16 image tower with deep visual prompts (``TRAINER.PROMPTKD.N_CTX_VISION`` tokens,
``PROMPT_DEPTH_VISION``) + the projector ``VPT_image_trans`` (``conv1.{0: Conv1x1 E_s->E_t,
1: BatchNorm, 2: ReLU, 3: Conv1x1 E_t->E_t}``), no text tower of its own; its logits are taken against
the teacher's text features of all classes. Trainable: the names containing ``VPT``. Checkpoints are
registered as ``VLPromptLearner`` with the original key names.

Deliberate fixes of the original's quirks (numbers from the PromptKD list in docs/compatibility.md; see
also trainers/distill.py and trainers/teacher.py): float32 master weights and autocast instead of an fp16
model, so fp16/bf16/amp/fp32 all work (5); the student's unused text tower is not built (16); the
projector is built on the training device (15); the teacher's text features are cached (1). Reproduced:
the KD normalisation by B x C (7) and model selection on base test accuracy (8).
"""
from __future__ import annotations

from typing import Tuple

import torch
import torch.nn.functional as F
from torch import nn

from dassl.engine import TRAINER_REGISTRY
from trainers.backbone import load_backbone
from trainers.distill import DistillTrainer
from trainers.promptsrc_model import ivlp_design_details


class ImageProjector(nn.Module):
    """PromptKD's ``Feature_Trans_Module_two_layer``: 1x1 conv -> BatchNorm -> ReLU -> 1x1 conv.

    Maps [B, input_dim] student features to [B, out_dim] (the teacher's embedding width). The layers sit
    in ``conv1`` so that the state-dict keys are ``conv1.{0,1,3}.*`` as in PromptKD's checkpoints.
    """

    def __init__(self, input_dim: int = 512, out_dim: int = 768) -> None:
        super().__init__()
        self.conv1 = nn.Sequential(
            nn.Conv2d(input_dim, out_dim, kernel_size=1),
            nn.BatchNorm2d(out_dim),
            nn.ReLU(inplace=True),
            nn.Conv2d(out_dim, out_dim, kernel_size=1),
        )

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        x = features.to(self.conv1[0].weight.dtype).reshape(features.shape[0], -1, 1, 1)
        return self.conv1(x).flatten(1)


class DistillStudent(nn.Module):
    """Student: ``image_encoder`` (CLIP visual), frozen ``logit_scale``, projector ``VPT_image_trans``.

    ``encode(image)`` -> (backbone features [B, E_s], projected features [B, E_t]), both unnormalised;
    ``forward(image)`` -> (L2-normalised projected features, exp(logit_scale)) as PromptKD's CustomCLIP.
    A trainer with RSM attaches its module as ``rsm`` (trained, saved, unused at test time).
    """

    def __init__(self, clip_model: nn.Module, teacher_dim: int) -> None:
        super().__init__()
        self.image_encoder = clip_model.visual
        self.logit_scale = clip_model.logit_scale
        self.VPT_image_trans = ImageProjector(clip_model.visual.output_dim, teacher_dim)

    def encode(self, image: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        backbone = self.image_encoder(image.to(self.image_encoder.conv1.weight.dtype))
        return backbone, self.VPT_image_trans(backbone)

    def forward(self, image: torch.Tensor, label=None) -> Tuple[torch.Tensor, torch.Tensor]:
        _, projected = self.encode(image)
        return F.normalize(projected, dim=-1), self.logit_scale.exp()


@TRAINER_REGISTRY.register()
class PromptKD(DistillTrainer):
    """PromptKD: prompted ViT-B/16 student + projector, distilled with the KD loss only."""

    def build_student(self, cfg, teacher_dim: int) -> nn.Module:
        kd_cfg = cfg.TRAINER.PROMPTKD
        # The student's text tower is never used: build it without text prompts (language depth 0).
        design = ivlp_design_details(kd_cfg.N_CTX_VISION, kd_cfg.N_CTX_TEXT, kd_cfg.PROMPT_DEPTH_VISION, 0)
        clip_model = load_backbone(cfg, design)
        return DistillStudent(clip_model, teacher_dim)
