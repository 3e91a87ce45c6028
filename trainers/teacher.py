"""The distillation teacher: a PromptSRC-trained CLIP loaded from PromptKD's released checkpoints.

Where things come from (config keys):
- the teacher checkpoint: ``TRAINER.PROMPTKD.TEACHER_CKPT`` or, when empty, PromptKD's folder layout
  under ``TRAINER.PROMPTKD.TEACHER_ROOT``: base2novel ``<root>/<DATASET.NAME>/VLPromptLearner/
  model-best.pth.tar`` (also under the spellings ``FGVCaircraft`` / ``StandfordCars`` of PromptKD's
  README; the base_only protocol uses this same base2novel teacher), cross
  ``<root>/ImageNet-xd/VLPromptLearner_large/model.pth.tar-20``. PromptKD hard-codes these paths
  (PromptKD quirks 3 and 12, docs/compatibility.md); here the root is configurable.
- the teacher's CLIP weights (the token embeddings, and the base the checkpoint is loaded onto):
  ``TRAINER.PROMPTKD.TEACHER_WEIGHTS`` or, when empty, ``TRAINER.PROMPTKD.TEACHER_NAME`` through
  ``clip``'s resolver. PromptKD's misspelt default name "ViT/L-14" is read as ViT-L/14 (PromptKD quirk 2).

The prompt design (context tokens and depths of both towers) is read from the checkpoint's prompt
tensors rather than assumed to be 4 + 4 tokens at depth 9; PromptKD's released teachers have exactly
that design. Missing or unexpected keys are reported; a checkpoint without its prompt tensors stops
with a ``UserError``.

The text features of all classes are computed once, right after loading (PromptKD recomputes them for
every batch: PromptKD quirk 1); only the image tower runs per training batch, and the teacher does not
run at test time at all. A :class:`Teacher` remembers which checkpoint and weights it was built from
(``checkpoint``, ``weights``), so caches keyed by the teacher never resolve them a second time.
"""
from __future__ import annotations

import os
import re
from typing import Dict, List, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from dassl.utils import UserError, load_checkpoint
from trainers.backbone import build_clip, load_clip_state_dict
from trainers.promptsrc_model import CHECKPOINT_MODEL_NAME, TOKEN_BUFFER_KEYS, PromptedCLIP, ivlp_design_details

# PromptKD's README spells two teacher folders differently from DATASET.NAME.
README_FOLDER_SPELLINGS: Dict[str, List[str]] = {
    "FGVCAircraft": ["FGVCaircraft"],
    "StanfordCars": ["StandfordCars"],
}
BASE2NOVEL_TEACHER = os.path.join(CHECKPOINT_MODEL_NAME, "model-best.pth.tar")
CROSS_TEACHER = os.path.join("ImageNet-xd", f"{CHECKPOINT_MODEL_NAME}_large", "model.pth.tar-20")
TEACHER_NAME_FIXES = {"ViT/L-14": "ViT-L/14"}
ZERO_SHOT_TOWER_PREFIX = "prompt_learner.ZS_image_encoder."
RELEASED_DESIGN = {"n_ctx_vision": 4, "n_ctx_text": 4, "depth_vision": 9, "depth_text": 9}
WHERE_TO_GET_TEACHERS = (
    "Download PromptKD's released teacher checkpoints (links in the PromptKD README, 'Teacher Models') "
    "and unzip them into TRAINER.PROMPTKD.TEACHER_ROOT, train one with scripts/teacher_train.sh, "
    "or point TRAINER.PROMPTKD.TEACHER_CKPT at a checkpoint file."
)
TEXT_FEATURE_CHUNK = 256  # classes per text-encoder pass when caching features


def teacher_checkpoint_candidates(cfg) -> List[str]:
    """Paths where the teacher checkpoint may be, in the order they are tried."""
    kd_cfg = cfg.TRAINER.PROMPTKD
    if kd_cfg.TEACHER_CKPT:
        return [kd_cfg.TEACHER_CKPT]
    root = kd_cfg.TEACHER_ROOT
    if cfg.TRAINER.MODAL == "cross":
        return [os.path.join(root, CROSS_TEACHER)]
    folders = [cfg.DATASET.NAME] + README_FOLDER_SPELLINGS.get(cfg.DATASET.NAME, [])
    return [os.path.join(root, folder, BASE2NOVEL_TEACHER) for folder in folders]


def resolve_teacher_checkpoint(cfg) -> str:
    """The first existing teacher checkpoint path; a ``UserError`` listing the paths tried otherwise."""
    candidates = teacher_checkpoint_candidates(cfg)
    for path in candidates:
        if os.path.isfile(path):
            return path
    tried = "\n".join(f"  {path}" for path in candidates)
    raise UserError(
        f"Teacher checkpoint not found for dataset {cfg.DATASET.NAME!r} (protocol {cfg.TRAINER.MODAL}). "
        f"Looked for:\n{tried}\n{WHERE_TO_GET_TEACHERS}"
    )


def resolve_teacher_weights(cfg) -> str:
    """The CLIP weights name or file of the teacher backbone (TEACHER_WEIGHTS, else TEACHER_NAME)."""
    kd_cfg = cfg.TRAINER.PROMPTKD
    if kd_cfg.TEACHER_WEIGHTS:
        return kd_cfg.TEACHER_WEIGHTS
    name = kd_cfg.TEACHER_NAME
    if name in TEACHER_NAME_FIXES:
        print(f'Note: TRAINER.PROMPTKD.TEACHER_NAME "{name}" (PromptKD\'s misspelt default) read as '
              f'"{TEACHER_NAME_FIXES[name]}"')
        name = TEACHER_NAME_FIXES[name]
    if not name:
        raise UserError("Set TRAINER.PROMPTKD.TEACHER_NAME (e.g. ViT-L/14) or TRAINER.PROMPTKD.TEACHER_WEIGHTS.")
    return name


def _deep_prompt_indices(state_dict: dict, prefix: str) -> List[int]:
    pattern = re.compile(re.escape(prefix) + r"(\d+)\.VPT_shallow$")
    return sorted(int(m.group(1)) for key in state_dict for m in [pattern.match(key)] if m)


def teacher_design_from_state_dict(state_dict: dict, path: str = "<checkpoint>") -> dict:
    """Prompt design of a PromptSRC checkpoint, read from its prompt tensors; stops when any is missing."""
    problems = []
    for key in ("prompt_learner.ctx", "image_encoder.VPT"):
        if key not in state_dict:
            problems.append(f"missing {key}")
    design = {}
    for tower, prefix in (("vision", "image_encoder.transformer.resblocks."),
                          ("text", "text_encoder.transformer.resblocks.")):
        indices = _deep_prompt_indices(state_dict, prefix)
        expected = list(range(1, len(indices) + 1))
        if indices != expected:
            absent = sorted(set(range(1, max(indices) + 1)) - set(indices))
            problems.append(f"missing {prefix}{{{','.join(map(str, absent))}}}.VPT_shallow")
        design[f"depth_{tower}"] = len(indices) + 1
    if problems:
        raise UserError(
            f"Teacher checkpoint {path} lacks prompt tensors ({'; '.join(problems)}): it is not a trained "
            f"PromptSRC/IVLP checkpoint, or it is damaged. {WHERE_TO_GET_TEACHERS}"
        )
    design["n_ctx_text"] = int(state_dict["prompt_learner.ctx"].shape[0])
    design["n_ctx_vision"] = int(state_dict["image_encoder.VPT"].shape[0])
    return design


def read_teacher_state_dict(path: str) -> dict:
    """The model state dict stored in a teacher checkpoint (engine dict or plain state dict)."""
    checkpoint = load_checkpoint(path)
    state_dict = checkpoint.get("state_dict", checkpoint) if isinstance(checkpoint, dict) else None
    if not isinstance(state_dict, dict):
        raise UserError(f"Teacher checkpoint {path} holds no state dict")
    return {(k[len("module."):] if k.startswith("module.") else k): v for k, v in state_dict.items()}


def load_teacher_weights(model: nn.Module, state_dict: dict, path: str) -> None:
    """Load a teacher state dict non-strictly into ``model``, reporting what did not match."""
    state_dict = {k: v for k, v in state_dict.items() if k not in TOKEN_BUFFER_KEYS}
    try:
        result = model.load_state_dict(state_dict, strict=False)
    except RuntimeError as error:
        raise UserError(
            f"Teacher checkpoint {path} does not fit the teacher CLIP (wrong TRAINER.PROMPTKD.TEACHER_WEIGHTS "
            f"/ TEACHER_NAME?): {error}"
        ) from error
    missing = [k for k in result.missing_keys if k not in TOKEN_BUFFER_KEYS]
    zero_shot = [k for k in result.unexpected_keys if k.startswith(ZERO_SHOT_TOWER_PREFIX)]
    unexpected = [k for k in result.unexpected_keys if not k.startswith(ZERO_SHOT_TOWER_PREFIX)]
    if zero_shot:
        print(f"Teacher: ignored {len(zero_shot)} keys of PromptSRC's frozen zero-shot tower "
              f"({ZERO_SHOT_TOWER_PREFIX}*)")
    if unexpected:
        print(f"Teacher: WARNING unexpected keys ignored ({len(unexpected)}): {unexpected}")
    if missing:
        prompt_missing = [k for k in missing if "VPT" in k or k.endswith(".ctx")]
        if prompt_missing:
            raise UserError(f"Teacher checkpoint {path} lacks prompt tensors {prompt_missing}. {WHERE_TO_GET_TEACHERS}")
        print(f"Teacher: WARNING keys missing from the checkpoint, kept from the CLIP weights ({len(missing)}): "
              f"{missing}")


class Teacher(nn.Module):
    """A frozen prompted CLIP with its class text features cached once.

    ``text_features`` [n_cls, E] (L2-normalised, float32) is computed at construction, from the loaded
    prompts; ``logits(image)`` runs only the image tower. Always in eval mode, no gradients.
    ``checkpoint`` and ``weights`` name the teacher checkpoint file and the CLIP weights it was built from.
    """

    def __init__(self, model: PromptedCLIP, checkpoint: str = "", weights: str = "") -> None:
        super().__init__()
        self.checkpoint = checkpoint
        self.weights = weights
        self.model = model
        self.model.requires_grad_(False)
        self.model.eval()
        self.register_buffer("text_features", torch.empty(0), persistent=False)
        self.refresh_text_features()

    def train(self, mode: bool = True) -> "Teacher":
        """The teacher never leaves eval mode."""
        return super().train(False)

    @torch.no_grad()
    def refresh_text_features(self) -> torch.Tensor:
        """(Re)compute and cache the normalised text features of all classes, in float32."""
        if self.model.text_encoder is None:
            raise RuntimeError("the teacher's text tower was released (release_text_tower): its class features "
                               "cannot be recomputed")
        device_type = self.model.logit_scale.device.type
        with torch.autocast(device_type=device_type, enabled=False):
            features = self.model.encode_text(chunk_size=TEXT_FEATURE_CHUNK).float()
        self.text_features = F.normalize(features, dim=-1)
        return self.text_features

    def release_text_tower(self) -> None:
        """Free the text encoder: once the class features are cached, training and evaluation never run it
        again (about 0.5 GB in float32 for ViT-L/14). The prompt learner (the class prompts) is kept."""
        self.model.text_encoder = None

    def cast_image_tower(self, dtype: torch.dtype) -> None:
        """Store the frozen image tower in ``dtype`` (e.g. fp16 under fp16 autocast on CUDA).

        The teacher is never trained, so it needs no float32 master weights; a half-precision copy saves
        the per-step weight casts of autocast and half the memory. Cached text features stay float32.
        """
        self.model.image_encoder.to(dtype)

    @property
    def logit_scale(self) -> torch.Tensor:
        return self.model.logit_scale.detach().exp()

    @property
    def num_classes(self) -> int:
        return self.text_features.shape[0]

    @torch.no_grad()
    def image_features(self, image: torch.Tensor) -> torch.Tensor:
        """Normalised teacher image features [B, E]."""
        return F.normalize(self.model.encode_image(image), dim=-1)

    @torch.no_grad()
    def logits_from_features(self, features: torch.Tensor,
                             class_vectors: Optional[torch.Tensor] = None) -> torch.Tensor:
        """exp(logit_scale) * features @ class vectors.T (features from ``image_features``).

        ``class_vectors`` defaults to the cached text features of all classes; a protocol that trains on
        a subset of the classes (base_only) passes those rows, so the logits have one column per class.
        """
        vectors = self.text_features if class_vectors is None else class_vectors
        return self.logit_scale * features @ vectors.to(features.dtype).t()

    @torch.no_grad()
    def logits(self, image: torch.Tensor, class_vectors: Optional[torch.Tensor] = None) -> torch.Tensor:
        """exp(logit_scale) * norm(image features) @ class vectors.T (default: all classes' text features)."""
        return self.logits_from_features(self.image_features(image), class_vectors)


def build_teacher(cfg, classnames: Sequence[str], device: Optional[torch.device] = None, verbose: bool = True) -> Teacher:
    """Build the teacher for ``classnames`` from the configured checkpoint and CLIP weights."""
    ckpt_path = resolve_teacher_checkpoint(cfg)
    weights = resolve_teacher_weights(cfg)
    if verbose:
        print(f"CLIP Teacher name is {cfg.TRAINER.PROMPTKD.TEACHER_NAME} (weights: {weights})")
        print(f'Loading teacher checkpoint from "{ckpt_path}"')
    state_dict = read_teacher_state_dict(ckpt_path)
    # PromptSRC checkpoints carry a frozen copy of the zero-shot image tower that the teacher never uses:
    # dropped at once so it does not stay in memory while the model is built.
    zero_shot = [k for k in state_dict if k.startswith(ZERO_SHOT_TOWER_PREFIX)]
    for key in zero_shot:
        del state_dict[key]
    if zero_shot:
        print(f"Teacher: ignored {len(zero_shot)} keys of PromptSRC's frozen zero-shot tower "
              f"({ZERO_SHOT_TOWER_PREFIX}*)")
    design = teacher_design_from_state_dict(state_dict, ckpt_path)
    if verbose:
        print(f"Teacher prompt design (from the checkpoint): {design['n_ctx_vision']} vision + "
              f"{design['n_ctx_text']} text tokens, depth {design['depth_vision']}/{design['depth_text']}")
        if design != RELEASED_DESIGN:
            print(f"Note: PromptKD's released teachers use {RELEASED_DESIGN}")
    clip_state = load_clip_state_dict(weights, "TRAINER.PROMPTKD.TEACHER_WEIGHTS / TEACHER_NAME")
    design_details = ivlp_design_details(design["n_ctx_vision"], design["n_ctx_text"], design["depth_vision"],
                                         design["depth_text"])
    # The model takes the loaded tensors (no copy): the checkpoint, the CLIP weights and a built copy of
    # them would otherwise all be in memory at once, the peak of a whole training run.
    clip_model = build_clip(clip_state, design_details, f"{weights} (for the teacher checkpoint {ckpt_path})",
                            take_tensors=True)
    del clip_state
    model = PromptedCLIP(
        classnames,
        clip_model,
        n_ctx_text=design["n_ctx_text"],
        ctx_init=cfg.TRAINER.PROMPTKD.CTX_INIT,
        n_ctx_vision=design["n_ctx_vision"],
        verbose=verbose,
    )
    load_teacher_weights(model, state_dict, ckpt_path)
    del state_dict  # the model holds copies: the checkpoint's tensors are not kept alive
    if device is not None:
        model.to(device)
    teacher = Teacher(model, checkpoint=ckpt_path, weights=weights)
    if verbose:
        print(f"Teacher text features cached once for {teacher.num_classes} classes "
              f"(dim {teacher.text_features.shape[1]})")
    return teacher
