"""ZeroshotCLIP: CLIP without any training, one hand-written template per dataset.

Each class becomes ``CUSTOM_TEMPLATES[DATASET.NAME].format(class name with spaces)``; the text features
are encoded once and L2-normalised; logits = ``exp(logit_scale) * norm(image features) @ text.T``.
Run with ``--eval-only`` (``scripts/zeroshot.sh``). Registers no model and no optimiser.

Besides the evaluator's log block, ``test()`` writes ``<OUTPUT_DIR>/zeroshot.json`` (trainer, dataset,
class subset, split, accuracy, config hash) atomically; ``trainers.results.write_zeroshot_results``
combines the parts of a base/new evaluation into a results.json.

Precision: zero-shot runs use CoOp's configs (``configs/trainers/CoOp/*.yaml``, as CoOp's own zero-shot
script does), so the precision key is CoOp's ``TRAINER.COOP.PREC``: fp16 / bf16 / amp mean autocast on
CUDA over float32 weights (CoOp casts the model to fp16 instead).
"""
from __future__ import annotations

import os
from typing import Optional

import torch
import torch.nn.functional as F

import clip
from dassl.engine import TRAINER_REGISTRY, TrainerX
from dassl.utils import UserError, write_json
from datasets.templates import get_template
from trainers.backbone import NO_PROMPTS, check_input_size, load_backbone
from trainers.config import read_precision
from dassl.config import config_hash
from trainers.results import ZEROSHOT_PART_FILENAME

PRECISION_KEY = "TRAINER.COOP.PREC"


@TRAINER_REGISTRY.register()
class ZeroshotCLIP(TrainerX):
    """Zero-shot CLIP classifier with the dataset's template; evaluation only."""

    def build_model(self) -> None:
        cfg = self.cfg
        classnames = self.dm.dataset.classnames
        clip_model = load_backbone(cfg, NO_PROMPTS)
        clip_model.requires_grad_(False).eval().to(self.device)
        check_input_size(cfg, clip_model.visual, "backbone")

        template = get_template(cfg.DATASET.NAME)
        prompts = [template.format(name.replace("_", " ")) for name in classnames]
        print(f"Prompts: {prompts}")
        tokens = clip.tokenize(prompts, context_length=clip_model.context_length, truncate=True)
        with torch.no_grad():
            text_features = clip_model.encode_text(tokens.to(self.device)).float()
        self.text_features = F.normalize(text_features, dim=-1)
        self.clip_model = clip_model
        self.set_precision(read_precision(cfg, PRECISION_KEY))

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
        write_json(record, os.path.join(self.output_dir, ZEROSHOT_PART_FILENAME))
        return accuracy
