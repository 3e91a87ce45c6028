"""ZeroshotCLIP: CLIP without any training, one hand-written template per dataset (promptkd.md §16).

Each class becomes ``CUSTOM_TEMPLATES[DATASET.NAME].format(class name with spaces)``; the text features
are encoded once and L2-normalised; logits = ``exp(logit_scale) * norm(image features) @ text.T``.
Run with ``--eval-only`` (``scripts/zeroshot.sh``). Registers no model and no optimiser.

Besides the evaluator's log block, ``test()`` writes ``<OUTPUT_DIR>/zeroshot.json`` (trainer, dataset,
class subset, split, accuracy, config hash), which ``scripts/zeroshot.sh`` turns into a results.json.
Precision: float32 weights; ``TRAINER.COOP.PREC`` fp16 / bf16 / amp means autocast on CUDA (the
original casts the model to fp16 instead).
"""
from __future__ import annotations

import json
import os
from typing import Optional

import torch
import torch.nn.functional as F

import clip
from dassl.engine import TRAINER_REGISTRY, TrainerX
from dassl.utils import UserError
from datasets.templates import get_template
from trainers.results import config_hash
from trainers.teacher import load_clip_state_dict

RESULT_FILE = "zeroshot.json"


@TRAINER_REGISTRY.register()
class ZeroshotCLIP(TrainerX):
    """Zero-shot CLIP classifier with the dataset's template; evaluation only."""

    def build_model(self) -> None:
        cfg = self.cfg
        classnames = self.dm.dataset.classnames
        weights = cfg.MODEL.BACKBONE.WEIGHTS or cfg.MODEL.BACKBONE.NAME
        print(f"Loading CLIP (backbone: {cfg.MODEL.BACKBONE.NAME}, weights: {weights})")
        clip_model = clip.build_model(load_clip_state_dict(weights, "MODEL.BACKBONE.WEIGHTS / MODEL.BACKBONE.NAME"))
        clip_model.requires_grad_(False).eval().to(self.device)
        resolution = clip_model.visual.input_resolution
        if cfg.INPUT.SIZE[0] != resolution:
            raise UserError(f"INPUT.SIZE {tuple(cfg.INPUT.SIZE)} does not match the CLIP input resolution "
                            f"{resolution} of {weights!r}; set INPUT.SIZE ({resolution}, {resolution})")

        template = get_template(cfg.DATASET.NAME)
        prompts = [template.format(name.replace("_", " ")) for name in classnames]
        print(f"Prompts: {prompts}")
        tokens = clip.tokenize(prompts, context_length=clip_model.context_length, truncate=True)
        with torch.no_grad():
            text_features = clip_model.encode_text(tokens.to(self.device)).float()
        self.text_features = F.normalize(text_features, dim=-1)
        self.clip_model = clip_model
        prec = cfg.TRAINER.COOP.PREC
        self.set_precision(prec if prec in ("fp16", "bf16", "amp") else "fp32")

    @torch.no_grad()
    def model_inference(self, image: torch.Tensor) -> torch.Tensor:
        image_features = F.normalize(self.clip_model.encode_image(image).float(), dim=-1)
        return self.clip_model.logit_scale.exp().float() * image_features @ self.text_features.t()

    def load_model(self, directory: str, epoch: Optional[int] = None) -> None:
        """Nothing to load: zero-shot CLIP has no trained weights."""
        if directory:
            print(f"Note: ZeroshotCLIP has no trained weights; --model-dir {directory} is ignored")

    def train(self) -> None:  # type: ignore[override]
        raise UserError("ZeroshotCLIP does not train: run it with --eval-only (see scripts/zeroshot.sh)")

    def test(self, split: Optional[str] = None):
        accuracy = super().test(split)
        cfg = self.cfg
        record = {
            "trainer": cfg.TRAINER.NAME, "dataset": cfg.DATASET.NAME,
            "subsample": cfg.DATASET.SUBSAMPLE_CLASSES, "split": split or cfg.TEST.SPLIT,
            "accuracy": float(accuracy), "config_hash": config_hash(cfg),
        }
        os.makedirs(self.output_dir, exist_ok=True)
        path = os.path.join(self.output_dir, RESULT_FILE)
        with open(path, "w", encoding="utf-8") as stream:
            json.dump(record, stream, indent=2)
            stream.write("\n")
        return accuracy
