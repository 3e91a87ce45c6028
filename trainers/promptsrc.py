"""PromptSRC: supervised prompt learning with self-regularisation; a baseline, and it trains the
distillation teachers.

Model: a CLIP with deep prompts on both towers (``trainers.promptsrc_model.
PromptedCLIP``, PromptSRC's ``CustomCLIP`` key layout) plus two frozen zero-shot references built from
the same CLIP weights without prompts:
- ``prompt_learner.ZS_image_encoder``: the plain vision tower (saved in checkpoints, as PromptSRC does;
  the teacher loader ignores it);
- ``fixed_embeddings``: per class, the mean over PromptSRC's 60 ``IMAGENET_TEMPLATES`` of the
  *unnormalised* plain text features (a non-persistent buffer, never saved).

Loss per step: ``CE + KL(zero-shot || prompted logits) / (B*C)
+ TEXT_LOSS_WEIGHT * L1(prompted text, fixed text) + IMAGE_LOSS_WEIGHT * L1(prompted image, zero-shot image)``
on L2-normalised features. After the last epoch the Gaussian-weighted average of the per-epoch prompts
(GPA) replaces the prompts; the last checkpoint and the final test use it.

Checkpoints go to ``<OUTPUT_DIR>/VLPromptLearner/`` with the key names of PromptKD's released teachers,
so ``scripts/teacher_train.sh`` can install them as PromptKD teachers.

As a baseline it follows the supervised protocol of ``trainers.supervised`` (shared with CoOp, CoCoOp,
IVLP and MaPLe): trained on the base classes, the final (GPA) model is scored on the base and the new
classes in the same run and results.json is written; ``--eval-only`` runs write theirs too.

Decisions on quirks:
- GPA averages only the trainable prompt tensors, not the whole state dict: the frozen weights never
  change, so averaging them (PromptSRC does) only costs memory and adds rounding. Same result otherwise.
  If training resumed mid-run, the per-epoch snapshots of the earlier epochs are gone; GPA is then
  skipped with a message instead of silently averaging a subset.
- All precisions work (float32 master weights, autocast for fp16/bf16/amp); the original ``amp`` path
  was broken.
- Template prompts are tokenised at the model's own context length and truncated when longer (the
  original would fail on such a prompt).
"""
from __future__ import annotations

import math
from typing import Dict, List, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

import clip
from dassl.engine import TRAINER_REGISTRY
from dassl.utils import UserError
from datasets.templates import IMAGENET_TEMPLATES
from trainers.backbone import NO_PROMPTS, build_clip, load_backbone_state_dict
from trainers.promptsrc_model import (CHECKPOINT_MODEL_NAME, TOKEN_BUFFER_KEYS, PromptedCLIP, is_promptsrc_trainable,
                                      ivlp_design_details)
from trainers.supervised import SupervisedPromptTrainer

PRECISION_KEY = "TRAINER.PROMPTSRC.PREC"


def gaussian_weights(num_epochs: int, mean: float, std: float) -> List[float]:
    """GPA weights g_k ∝ N(k; mean, std) for 1-based epochs k = 1..num_epochs, normalised to sum 1.

    Computed from log-densities so that epochs far from ``mean`` do not underflow the normalisation.
    """
    if num_epochs < 1:
        raise ValueError(f"GPA needs at least one epoch, got {num_epochs}")
    if std <= 0:
        raise ValueError(f"TRAINER.PROMPTSRC.GPA_STD must be positive, got {std}")
    logs = [-0.5 * ((k - mean) / std) ** 2 for k in range(1, num_epochs + 1)]
    top = max(logs)
    raw = [math.exp(v - top) for v in logs]
    total = sum(raw)
    return [r / total for r in raw]


@torch.no_grad()
def template_text_features(clip_model: nn.Module, classnames: Sequence[str],
                           templates: Sequence[str] = IMAGENET_TEMPLATES) -> torch.Tensor:
    """Mean over ``templates`` of the unnormalised text features of every class [n_cls, E] (float32)."""
    device = clip_model.token_embedding.weight.device
    names = [c.replace("_", " ") for c in classnames]
    total = None
    for template in templates:
        texts = [template.replace("{}", name) for name in names]
        tokens = clip.tokenize(texts, context_length=clip_model.context_length, truncate=True).to(device)
        features = clip_model.encode_text(tokens).float()
        total = features if total is None else total + features
    return total / len(templates)


class PromptSRCCLIP(PromptedCLIP):
    """PromptedCLIP plus PromptSRC's frozen zero-shot references and its training losses."""

    def __init__(self, classnames: Sequence[str], clip_state: Dict[str, torch.Tensor], n_ctx_text: int,
                 n_ctx_vision: int, depth_text: int, depth_vision: int, ctx_init: str,
                 device: Optional[torch.device] = None) -> None:
        design = ivlp_design_details(n_ctx_vision, n_ctx_text, depth_vision, depth_text)
        prompted = build_clip(clip_state, design, "MODEL.BACKBONE weights")
        if device is not None:
            prompted.to(device)
        super().__init__(classnames, prompted, n_ctx_text=n_ctx_text, ctx_init=ctx_init,
                         n_ctx_vision=n_ctx_vision)
        zero_shot = build_clip(clip_state, NO_PROMPTS, "MODEL.BACKBONE weights")
        if device is not None:
            zero_shot.to(device)
        zero_shot.eval()
        fixed = template_text_features(zero_shot, classnames)
        self.prompt_learner.ZS_image_encoder = zero_shot.visual.requires_grad_(False)
        self.register_buffer("fixed_embeddings", fixed, persistent=False)
        self.fixed_classnames = list(classnames)  # the classes fixed_embeddings belongs to

    def train(self, mode: bool = True) -> "PromptSRCCLIP":
        super().train(mode)
        self.prompt_learner.ZS_image_encoder.eval()  # frozen reference: always eval mode
        return self

    def training_losses(self, image: torch.Tensor, label: torch.Tensor, text_weight: float,
                        image_weight: float) -> Dict[str, torch.Tensor]:
        """PromptSRC's four loss terms for one labelled batch (of the classes the model was built for)."""
        if self.prompt_learner.classnames != self.fixed_classnames:
            raise RuntimeError("PromptSRC's fixed text features belong to the classes the model was built for; "
                               "set_classnames(...) back to them before training")
        scale = self.logit_scale.exp()
        text = F.normalize(self.encode_text(), dim=-1)
        img = F.normalize(self.encode_image(image), dim=-1)
        logits = scale * img @ text.t()
        with torch.no_grad():
            fixed = F.normalize(self.fixed_embeddings, dim=-1)
            zs_encoder = self.prompt_learner.ZS_image_encoder
            zs_img = F.normalize(zs_encoder(image.to(zs_encoder.conv1.weight.dtype)), dim=-1)
            zs_logits = scale * zs_img @ fixed.to(zs_img.dtype).t()
        ce = F.cross_entropy(logits, label)
        scl_text = F.l1_loss(text, fixed.to(text.dtype), reduction="mean") * text_weight
        scl_image = F.l1_loss(img, zs_img.to(img.dtype), reduction="mean") * image_weight
        scl_logits = F.kl_div(F.log_softmax(logits.float(), dim=1), F.log_softmax(zs_logits.float(), dim=1),
                              reduction="sum", log_target=True) / logits.numel()
        return {"ce": ce, "scl_logits": scl_logits, "scl_text": scl_text, "scl_image": scl_image,
                "logits": logits}


@TRAINER_REGISTRY.register()
class PromptSRC(SupervisedPromptTrainer):
    """Supervised PromptSRC training (CE + self-regularisation + GPA); see the module docstring."""

    PRECISION_KEY = PRECISION_KEY
    MODEL_NAME = CHECKPOINT_MODEL_NAME
    # Token buffers are rebuilt from the current class names, so `load_model` drops them (PromptSRC).
    CHECKPOINT_IGNORED_KEYS = TOKEN_BUFFER_KEYS

    def check_cfg(self, cfg) -> None:
        if cfg.TRAINER.PROMPTSRC.PROMPT_DEPTH_TEXT < 1:
            raise UserError("TRAINER.PROMPTSRC.PROMPT_DEPTH_TEXT must be >= 1 (the text prompts start at layer 0)")
        super().check_cfg(cfg)

    def build_custom_clip(self, cfg, classnames: Sequence[str]) -> nn.Module:
        src = cfg.TRAINER.PROMPTSRC
        clip_state = load_backbone_state_dict(cfg)
        return PromptSRCCLIP(classnames, clip_state, n_ctx_text=src.N_CTX_TEXT, n_ctx_vision=src.N_CTX_VISION,
                             depth_text=src.PROMPT_DEPTH_TEXT, depth_vision=src.PROMPT_DEPTH_VISION,
                             ctx_init=src.CTX_INIT, device=self.device)

    def is_trainable(self, name: str) -> bool:
        return is_promptsrc_trainable(name)

    def build_model(self) -> None:
        super().build_model()
        src = self.cfg.TRAINER.PROMPTSRC
        self.gpa_weights = gaussian_weights(self.cfg.OPTIM.MAX_EPOCH, float(src.GPA_MEAN), float(src.GPA_STD))
        self.gpa_sum: Optional[Dict[str, torch.Tensor]] = None
        self.gpa_epochs: List[int] = []

    # ------------------------------------------------------------------ training
    def forward_backward(self, batch: dict) -> Dict[str, float]:
        image, label = self.parse_batch_train(batch)
        src = self.cfg.TRAINER.PROMPTSRC
        with self.precision.autocast():
            terms = self.model.training_losses(image, label, float(src.TEXT_LOSS_WEIGHT),
                                               float(src.IMAGE_LOSS_WEIGHT))
            loss = terms["ce"] + terms["scl_logits"] + terms["scl_text"] + terms["scl_image"]
        self.model_backward_and_update(loss)
        summary = {"loss": loss.item(), "ce": terms["ce"].item(), "scl_logits": terms["scl_logits"].item(),
                   "scl_text": terms["scl_text"].item(), "scl_image": terms["scl_image"].item()}
        if (self.batch_idx + 1) == self.num_batches:
            self.update_lr()
            self.accumulate_gpa()
        return summary

    # ------------------------------------------------------------------ Gaussian prompt aggregation
    def _prompt_tensors(self) -> Dict[str, torch.Tensor]:
        return {n: p for n, p in self.model.named_parameters() if p.requires_grad}

    @torch.no_grad()
    def accumulate_gpa(self) -> None:
        """Add this epoch's prompts, weighted by its Gaussian weight; swap in the average at the end."""
        weight = self.gpa_weights[self.epoch]
        current = self._prompt_tensors()
        if self.gpa_sum is None:
            self.gpa_sum = {n: torch.zeros_like(p, dtype=torch.float32) for n, p in current.items()}
        for name, param in current.items():
            self.gpa_sum[name] += weight * param.float()
        self.gpa_epochs.append(self.epoch)
        if self.epoch + 1 == self.max_epoch:
            self.apply_gpa()

    @torch.no_grad()
    def apply_gpa(self) -> None:
        expected = list(range(self.max_epoch))
        if self.gpa_epochs != expected:
            print(f"GPA skipped: only epochs {[e + 1 for e in self.gpa_epochs]} of this run were seen "
                  f"(training resumed), so the final model keeps the last-epoch prompts")
            return
        print("Using GPA model for final inference...")
        for name, param in self._prompt_tensors().items():
            param.copy_(self.gpa_sum[name].to(param.dtype))


__all__ = ["PromptSRC", "PromptSRCCLIP", "gaussian_weights", "template_text_features"]
