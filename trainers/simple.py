"""Simple (AME paper, Sec. 4): a frozen CLIP ViT-B/16 image tower without prompts plus a learnable
projection after it (PromptKD's projector class), distilled from the same teacher with the same KD loss.

Only the projector ``VPT_image_trans`` is trained (PromptKD's rule: no other name contains ``VPT``).
Checkpoints use PromptKD's layout (``VLPromptLearner/``), so the same scripts and tools apply.
"""
from torch import nn

from dassl.engine import TRAINER_REGISTRY
from trainers.backbone import NO_PROMPTS, load_backbone
from trainers.distill import DistillTrainer
from trainers.promptkd import DistillStudent


@TRAINER_REGISTRY.register()
class Simple(DistillTrainer):
    """Frozen, prompt-free CLIP image tower + learnable projector, KD loss only."""

    def build_student(self, cfg, teacher_dim: int) -> nn.Module:
        clip_model = load_backbone(cfg, NO_PROMPTS)
        return DistillStudent(clip_model, teacher_dim)
