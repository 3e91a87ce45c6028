"""KDPL's teacher: a frozen zero-shot CLIP (no prompts, no checkpoint) with one hand-written prompt per class.

Where it comes from: ``TRAINER.KDPL.TEACHER_WEIGHTS`` (an OpenAI-layout weights file; open_clip
checkpoints in that layout are read too) or, when empty, ``TRAINER.KDPL.TEACHER``, a model name for
``clip``'s resolver (``./clip/<file>``, ``$CLIP_HOME``, ``~/.cache/clip``, else a checked download).
The default is ``ViT-L/14``. KDPL's own default, ``ViT-H-14-quickgelu`` (Apple's DFN-5B ViT-H/14
through open_clip), cannot be built here: ``clip`` builds every tower with 64-wide attention heads
(OpenAI's rule) while open_clip's ViT-H/14 uses 80-wide heads, so converted weights would load and
compute something else. Such towers are refused by their width (:data:`WIDE_HEAD_TOWERS`); see
docs/compatibility.md, section 6 ("KDPL").

Text side: each class becomes one prompt (the dataset's template, or ``"a photo of a {}."`` in the
class-agnostic mode), encoded once when the teacher is built, in chunks; the normalised features are
kept in float32 and the text tower is then released (only the image tower runs per batch).

Logits: KDPL scales the teacher's cosine similarities with the *student's* logit scale, not the
teacher's own, so :meth:`ZeroShotTeacher.logits` takes the scale as an argument.
"""
from __future__ import annotations

from typing import Dict, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

import clip
from dassl.utils import UserError
from datasets.templates import fill_template
from trainers.backbone import NO_PROMPTS, build_clip, load_clip_state_dict

TEACHER_KEYS = "TRAINER.KDPL.TEACHER_WEIGHTS / TRAINER.KDPL.TEACHER"
CLASS_AGNOSTIC_TEMPLATE = "a photo of a {}."
TEXT_CHUNK = 256  # prompts per text-tower pass when the class features are computed
# Vision widths of open_clip towers whose attention heads are not 64 wide (name, head width): the
# OpenAI-layout builder would split them into the wrong number of heads.
WIDE_HEAD_TOWERS: Dict[int, tuple] = {1280: ("ViT-H/14", 80), 1408: ("ViT-g/14", 88), 1664: ("ViT-bigG/14", 104)}


def teacher_source(cfg) -> str:
    """The teacher's weights: ``TRAINER.KDPL.TEACHER_WEIGHTS`` when set, else the model name ``TEACHER``."""
    kdpl = cfg.TRAINER.KDPL
    source = kdpl.TEACHER_WEIGHTS or kdpl.TEACHER
    if not source:
        raise UserError("Set TRAINER.KDPL.TEACHER (an OpenAI CLIP name, e.g. ViT-L/14) or TRAINER.KDPL.TEACHER_WEIGHTS "
                        "(a CLIP weights file)")
    if not kdpl.TEACHER_WEIGHTS and source not in clip.available_models():
        raise UserError(f"TRAINER.KDPL.TEACHER {source!r} is not an OpenAI CLIP model name (one of "
                        f"{clip.available_models()}); KDPL's DFN-5B ViT-H/14 (open_clip) cannot be built here. Set "
                        f"TRAINER.KDPL.TEACHER ViT-L/14, or TRAINER.KDPL.TEACHER_WEIGHTS to an OpenAI-layout "
                        f"weights file")
    return source


def check_head_width(clip_model: nn.Module, source: str) -> None:
    """Refuse an image tower that is an open_clip model with attention heads wider than 64."""
    width = clip_model.visual.conv1.weight.shape[0]
    if width in WIDE_HEAD_TOWERS:
        name, head_width = WIDE_HEAD_TOWERS[width]
        raise UserError(f"Teacher weights {source!r} have a {width}-wide image tower ({name} in open_clip, "
                        f"{head_width}-wide attention heads); this CLIP builds 64-wide heads, so the teacher would "
                        f"compute something else. Set {TEACHER_KEYS} to an OpenAI CLIP (e.g. ViT-L/14)")


def class_prompts(classnames: Sequence[str], template: str) -> list:
    """One prompt per class: ``template`` filled with the class name (underscores as spaces)."""
    return [fill_template(template, name) for name in classnames]


class ZeroShotTeacher(nn.Module):
    """A frozen CLIP image tower plus the cached, normalised text features of its class prompts.

    ``text_features`` [n_cls, E] (float32) is computed at construction; afterwards only ``visual``
    is kept. Always in eval mode, never trained.
    """

    def __init__(self, clip_model: nn.Module, prompts: Sequence[str], source: str = "") -> None:
        super().__init__()
        if not prompts:
            raise ValueError("the teacher needs at least one class prompt")
        self.source = source
        self.prompts = list(prompts)
        clip_model.requires_grad_(False).eval()
        self.register_buffer("text_features", encode_prompts(clip_model, self.prompts), persistent=False)
        self.visual = clip_model.visual

    def train(self, mode: bool = True) -> "ZeroShotTeacher":
        """The teacher never leaves eval mode."""
        return super().train(False)

    @property
    def num_classes(self) -> int:
        return self.text_features.shape[0]

    def cast_image_tower(self, dtype: torch.dtype) -> None:
        """Keep the frozen image tower in ``dtype`` (half precision under autocast on CUDA: half the memory)."""
        self.visual.to(dtype)

    @torch.no_grad()
    def image_features(self, image: torch.Tensor) -> torch.Tensor:
        """Normalised image features [B, E] of ``image``."""
        return F.normalize(self.visual(image.to(self.visual.conv1.weight.dtype)), dim=-1)

    @torch.no_grad()
    def logits(self, image: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        """``scale * norm(image features) @ text_features.T`` in float32, over all classes (KDPL passes
        the student's ``exp(logit_scale)``)."""
        features = self.image_features(image).float()
        with torch.autocast(device_type=features.device.type, enabled=False):  # the product in float32 too
            return scale.detach().float() * features @ self.text_features.t()


@torch.no_grad()
def encode_prompts(clip_model: nn.Module, prompts: Sequence[str], chunk_size: int = TEXT_CHUNK) -> torch.Tensor:
    """Normalised text features [len(prompts), E] in float32 (autocast off), ``chunk_size`` prompts a pass."""
    device = clip_model.token_embedding.weight.device
    parts = []
    with torch.autocast(device_type=device.type, enabled=False):
        for start in range(0, len(prompts), chunk_size):
            tokens = clip.tokenize(list(prompts[start:start + chunk_size]), context_length=clip_model.context_length,
                                   truncate=True)
            parts.append(clip_model.encode_text(tokens.to(device)).float())
    return F.normalize(torch.cat(parts), dim=-1)


def build_zero_shot_teacher(cfg, prompts: Sequence[str], device: Optional[torch.device] = None) -> ZeroShotTeacher:
    """The configured teacher CLIP with the text features of ``prompts`` (one per class)."""
    source = teacher_source(cfg)
    print(f"Loading Teacher CLIP (backbone: {source})")
    clip_model = build_clip(load_clip_state_dict(source, TEACHER_KEYS), NO_PROMPTS, source)
    check_head_width(clip_model, source)
    if device is not None:
        clip_model.to(device)
    print(f"Number of Teacher prompts: {len(prompts)}")
    print(f"First 5 Teacher prompts: {list(prompts[:5])}")
    teacher = ZeroShotTeacher(clip_model, prompts, source)
    print(f"Teacher text features computed once for {teacher.num_classes} classes "
          f"(dim {teacher.text_features.shape[1]})")
    return teacher


__all__ = ["CLASS_AGNOSTIC_TEMPLATE", "TEACHER_KEYS", "WIDE_HEAD_TOWERS", "ZeroShotTeacher", "build_zero_shot_teacher",
           "check_head_width", "class_prompts", "encode_prompts", "teacher_source"]
