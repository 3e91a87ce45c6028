"""Shared base of the distillation trainers (PromptKD, PromptKD_RSM, Simple, Simple_RSM).

What every distillation trainer does here:
- ``DISTILLS = True``: the engine builds the data with the distillation protocol ``TRAINER.MODAL``
  (base2novel: train on all classes unlabelled, val = base test images, test = new test images; cross:
  val = test = the target test set).
- builds the teacher (``trainers.teacher``), whose class text features are computed once and reused for
  every training and test batch; the teacher's image tower runs only in training (no grad, eval mode),
  and with ``TRAINER.PROMPTKD.CACHE_TEACHER_LOGITS`` only once per training image and process
  (``trainers.teacher_cache``; deterministic training transforms only);
- builds the student through ``build_student`` (subclass hook), optionally with an ``RSM`` module
  attached at ``student.rsm`` (``USES_RSM``), freezes it by PromptKD's rule (names with ``VPT``, plus
  ``rsm.*``), and registers it as ``VLPromptLearner`` (checkpoint folder and key names of PromptKD);
- the training step: PromptKD's KD loss (``KD_WEIGHT * kd_loss``) plus ``RSM.WEIGHT * H(M)`` when the
  trainer uses RSM and the weight is positive. With ``TRAINER.RSM.WEIGHT 0`` the RSM term is skipped
  entirely (the module is still built, from its own generator, so checkpoints keep the same keys and the
  run equals the host trainer's run);
- PromptKD's ``test()``: student logits against the teacher class vectors sliced by split
  (base2novel: val -> the first ceil(n/2) vectors, test -> the rest; cross: all);
- after training, the last-epoch model and the best-on-base model are both evaluated and
  ``<OUTPUT_DIR>/results.json`` is written (``trainers.results``).
"""
from __future__ import annotations

import math
from typing import Dict, Optional

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

import clip
from dassl.engine import TrainerX
from dassl.optim import build_lr_scheduler, build_optimizer
from dassl.utils import UserError, load_pretrained_weights
from trainers import teacher_cache
from trainers.losses import kd_loss
from trainers.results import base2novel_entry, build_results, cross_entry, write_results
from trainers.rsm import build_rsm
from trainers.teacher import (TOKEN_BUFFER_KEYS, build_teacher, load_clip_state_dict, resolve_teacher_checkpoint,
                              resolve_teacher_weights)

STUDENT_MODEL_NAME = "VLPromptLearner"
PRECISIONS = ("fp16", "bf16", "amp", "fp32")
PROTOCOLS = ("base2novel", "cross")
RSM_IMAGE_FEATURES = ("projected", "backbone")


def is_student_trainable(name: str) -> bool:
    """PromptKD's trainable-parameter rule (promptkd.md §3.4), extended with the RSM projections.

    Names containing ``prompt_learner`` are trainable unless they contain ``ZS_image_encoder``; other
    names are trainable iff they contain ``VPT`` (the visual prompts and the ``VPT_image_trans``
    projector); ``rsm.*`` (the RSM projections) is trainable too.
    """
    if name.startswith("rsm."):
        return True
    if "prompt_learner" in name:
        return "ZS_image_encoder" not in name
    return "VPT" in name


def class_vectors_for_split(text_features: torch.Tensor, protocol: str, split: str) -> torch.Tensor:
    """The teacher class vectors a split is scored against (promptkd.md §8.1).

    base2novel: ``val`` -> the first ceil(n/2) rows (base classes), anything else -> the remaining rows
    (new classes); cross: all rows.
    """
    if protocol == "base2novel":
        n_base = math.ceil(text_features.shape[0] / 2)
        return text_features[:n_base] if split == "val" else text_features[n_base:]
    return text_features


def load_student_clip(cfg, design_details: dict):
    """The student CLIP: MODEL.BACKBONE.WEIGHTS, else MODEL.BACKBONE.NAME through clip's resolver.

    [quirk 4 fixed] PromptKD always reads ./clip/ViT-B-16.pt; here the backbone name (or an explicit
    file) decides, and clip's resolver still looks in ./clip/ first.
    """
    source = cfg.MODEL.BACKBONE.WEIGHTS or cfg.MODEL.BACKBONE.NAME
    if not source:
        raise UserError("Set MODEL.BACKBONE.NAME (e.g. ViT-B/16) or MODEL.BACKBONE.WEIGHTS (a CLIP weights file).")
    print(f"Loading CLIP (backbone: {cfg.MODEL.BACKBONE.NAME}{', weights: ' + source if cfg.MODEL.BACKBONE.WEIGHTS else ''})")
    state_dict = load_clip_state_dict(source, "MODEL.BACKBONE.WEIGHTS / MODEL.BACKBONE.NAME")
    try:
        return clip.build_model(state_dict, design_details)
    except ValueError as error:
        raise UserError(f"Cannot build the student from {source!r} with {design_details}: {error}") from error


class DistillTrainer(TrainerX):
    """Base class: teacher, cached text features, KD (+ RSM) step, PromptKD's evaluation, results.json."""

    DISTILLS = True
    USES_RSM = False  # subclasses with the RSM term set True
    # PromptKD's load_model drops the token buffers and loads non-strictly (see TrainerBase.load_model).
    CHECKPOINT_IGNORED_KEYS = TOKEN_BUFFER_KEYS

    # ----------------------------------------------------------------- hooks for subclasses
    def build_student(self, cfg, teacher_dim: int) -> nn.Module:
        """Return the student module (``image_encoder``, ``logit_scale``, ``VPT_image_trans``, ``encode``)."""
        raise NotImplementedError

    # ----------------------------------------------------------------- configuration
    def check_cfg(self, cfg) -> None:
        kd_cfg = cfg.TRAINER.PROMPTKD
        if kd_cfg.PREC not in PRECISIONS:
            raise UserError(f"TRAINER.PROMPTKD.PREC must be one of {list(PRECISIONS)}, got {kd_cfg.PREC!r}")
        if cfg.TRAINER.MODAL not in PROTOCOLS:
            raise UserError(f"TRAINER.MODAL must be one of {list(PROTOCOLS)}, got {cfg.TRAINER.MODAL!r}")
        if kd_cfg.TEMPERATURE <= 0:
            raise UserError(f"TRAINER.PROMPTKD.TEMPERATURE must be positive, got {kd_cfg.TEMPERATURE}")
        if kd_cfg.CACHE_TEACHER_LOGITS:
            teacher_cache.check_deterministic_transforms(cfg)
        if self.USES_RSM:
            rsm_cfg = cfg.TRAINER.RSM
            if rsm_cfg.IMAGE_FEATURE not in RSM_IMAGE_FEATURES:
                raise UserError(f"TRAINER.RSM.IMAGE_FEATURE must be one of {list(RSM_IMAGE_FEATURES)}, "
                                f"got {rsm_cfg.IMAGE_FEATURE!r}")
            if rsm_cfg.WEIGHT < 0 or rsm_cfg.DIM <= 0 or rsm_cfg.HIDDEN < 0:
                raise UserError(f"TRAINER.RSM needs WEIGHT >= 0, DIM > 0, HIDDEN >= 0; got WEIGHT={rsm_cfg.WEIGHT}, "
                                f"DIM={rsm_cfg.DIM}, HIDDEN={rsm_cfg.HIDDEN}")

    @property
    def protocol(self) -> str:
        return self.cfg.TRAINER.MODAL

    @property
    def rsm_weight(self) -> float:
        return float(self.cfg.TRAINER.RSM.WEIGHT) if self.USES_RSM else 0.0

    # ----------------------------------------------------------------- model
    def build_model(self) -> None:
        cfg = self.cfg
        self.set_precision(cfg.TRAINER.PROMPTKD.PREC)
        classnames = list(self.dm.dataset.classnames)
        self._check_class_split(classnames)

        self.teacher = build_teacher(cfg, classnames, device=self.device)
        self._check_input_size(self.teacher.model.image_encoder, "teacher")
        if self.device.type == "cuda" and self.precision.autocast_dtype is not None:
            self.teacher.cast_image_tower(self.precision.autocast_dtype)
        self.teacher_cache = self._build_teacher_cache() if cfg.TRAINER.PROMPTKD.CACHE_TEACHER_LOGITS else None
        teacher_dim = self.teacher.text_features.shape[1]

        print("Building custom CLIP")
        student = self.build_student(cfg, teacher_dim)
        self._check_input_size(student.image_encoder, "student")
        if self.USES_RSM:
            image_dim = teacher_dim if cfg.TRAINER.RSM.IMAGE_FEATURE == "projected" else student.image_encoder.output_dim
            student.rsm = build_rsm(cfg, image_dim=image_dim, text_dim=teacher_dim)
            state = "on" if self.rsm_weight > 0 else "off (WEIGHT 0: module kept, term skipped)"
            print(f"RSM: weight {self.rsm_weight}, dim {cfg.TRAINER.RSM.DIM}, image features "
                  f"{cfg.TRAINER.RSM.IMAGE_FEATURE} -> {state}")

        print("Turning off gradients in both the image and the text encoder")
        for name, param in student.named_parameters():
            param.requires_grad_(is_student_trainable(name))
        trainable = sorted(name for name, p in student.named_parameters() if p.requires_grad)
        print(f"Parameters to be updated: {set(trainable)}")
        print(f"Parameters count: {len(trainable)}")
        if cfg.MODEL.INIT_WEIGHTS:
            load_pretrained_weights(student, cfg.MODEL.INIT_WEIGHTS)

        student.to(self.device)
        self.student = student
        self.model = student  # the engine's default model_inference / name
        self.optim = build_optimizer(student, cfg.OPTIM)
        self.sched = build_lr_scheduler(self.optim, cfg.OPTIM)
        self.register_model(STUDENT_MODEL_NAME, student, self.optim, self.sched)
        self._val_by_epoch: Dict[int, float] = {}
        self._loaded_checkpoint: Optional[dict] = None
        self._last_test_accuracy: Optional[float] = None
        self._best_is_last_epoch = False   # the final epoch set a new best val (base) result
        self._last_epoch_tested = False    # ... and the last-epoch weights were then tested on the test split

    def _build_teacher_cache(self) -> teacher_cache.TeacherOutputCache:
        """The teacher-output cache of this teacher and data (shared with earlier runs in this process)."""
        cfg = self.cfg
        key = teacher_cache.cache_key(cfg, resolve_teacher_checkpoint(cfg), resolve_teacher_weights(cfg, quiet=True),
                                      self.device)
        store = teacher_cache.store_for(key)
        n_train = len(self.dm.dataset.train_x)
        if store:
            print(f"Teacher cache ({teacher_cache.CONFIG_KEY}): reused, {len(store)} training images already "
                  f"cached by an earlier run in this process ({n_train} in this run)")
        else:
            print(f"Teacher cache ({teacher_cache.CONFIG_KEY}): new, filled as training first sees each of "
                  f"the {n_train} training images")
        return teacher_cache.TeacherOutputCache(self.teacher, store)

    @property
    def text_features(self) -> torch.Tensor:
        """The teacher's cached, normalised class vectors [n_cls, E] (all classes, label order)."""
        return self.teacher.text_features

    def _check_class_split(self, classnames) -> None:
        base = getattr(self.dm.dataset, "base_classnames", None)
        if self.protocol == "base2novel" and base is not None and len(base) != math.ceil(len(classnames) / 2):
            raise UserError(f"base2novel expects the first ceil(n/2) of {len(classnames)} classes as base, but the "
                            f"dataset reports {len(base)} base classes")

    def _check_input_size(self, image_encoder: nn.Module, who: str) -> None:
        resolution = image_encoder.input_resolution
        if self.cfg.INPUT.SIZE[0] != resolution:
            raise UserError(f"INPUT.SIZE {tuple(self.cfg.INPUT.SIZE)} does not match the {who} CLIP's input "
                            f"resolution {resolution}; set INPUT.SIZE ({resolution}, {resolution})")

    # ----------------------------------------------------------------- training
    def parse_batch_train(self, batch):
        return batch["img"].to(self.device), batch["label"].to(self.device)

    def parse_batch_test(self, batch):
        return batch["img"].to(self.device), batch["label"].to(self.device)

    def student_logits(self, image_features: torch.Tensor, class_vectors: torch.Tensor) -> torch.Tensor:
        """exp(student logit_scale) * normalised student features @ class vectors.T."""
        scale = self.student.logit_scale.exp()
        return scale * image_features @ class_vectors.to(image_features.dtype).t()

    def forward_backward(self, batch) -> dict:
        image, _ = self.parse_batch_train(batch)  # labels are never used by the student
        kd_cfg = self.cfg.TRAINER.PROMPTKD
        with self.precision.autocast():
            if self.teacher_cache is not None:
                teacher_logits = self.teacher_cache.logits(image, batch["impath"])
            else:
                teacher_logits = self.teacher.logits(image)
            backbone_features, projected = self.student.encode(image)
            image_features = F.normalize(projected, dim=-1)
            logits = self.student_logits(image_features, self.text_features)
        loss_kd = kd_cfg.KD_WEIGHT * kd_loss(logits, teacher_logits, kd_cfg.TEMPERATURE)
        loss = loss_kd
        summary = {}
        if self.rsm_weight > 0:
            rsm_input = projected if self.cfg.TRAINER.RSM.IMAGE_FEATURE == "projected" else backbone_features
            with self.precision.autocast():
                entropy, max_prob = self.student.rsm.entropy_and_max_prob(rsm_input, self.text_features)
            loss_rsm = self.rsm_weight * entropy
            loss = loss_kd + loss_rsm
            summary = {"kd": loss_kd.item(), "rsm": loss_rsm.item(), "H": entropy.item(), "max_p": max_prob.item()}
        self.model_backward_and_update(loss)
        if self.batch_idx + 1 == self.num_batches:
            self.update_lr()
        return {"loss": loss.item(), **summary}

    # ----------------------------------------------------------------- evaluation
    @torch.no_grad()
    def test(self, split: Optional[str] = None) -> float:
        """PromptKD's evaluation: student features against the split's slice of the teacher class vectors."""
        self.set_model_mode("eval")
        self.evaluator.reset()
        if split is None:
            split = self.cfg.TEST.SPLIT
        if split == "val" and self.val_loader is not None:
            loader = self.val_loader
        else:
            split = "test"
            loader = self.test_loader
        print(f"Evaluate on the *{split}* set")
        class_vectors = class_vectors_for_split(self.text_features, self.protocol, split)
        for batch in tqdm(loader):
            image, label = self.parse_batch_test(batch)
            with self.precision.autocast():
                image_features, _ = self.student(image)
                output = self.student_logits(image_features, class_vectors)
            self.evaluator.process(output.float(), label)
        results = self.evaluator.evaluate()
        for key, value in results.items():
            if isinstance(value, (int, float)):
                self.write_scalar(f"{split}/{key}", value, self.epoch)
        accuracy = float(list(results.values())[0])
        if split == "val" and getattr(self, "_in_epoch_eval", False):
            self._val_by_epoch[self.epoch + 1] = accuracy
        if split == "test":
            self._last_test_accuracy = accuracy
        return accuracy

    def after_epoch(self) -> None:
        best_before = self.best_result
        self._in_epoch_eval = True
        try:
            super().after_epoch()
        finally:
            self._in_epoch_eval = False
        if self.epoch + 1 == self.max_epoch and self.best_result != best_before:
            self._best_is_last_epoch = True

    def test_final_model(self) -> None:
        """The engine's final test, skipped when it would repeat one: if the best-on-base checkpoint is the
        last epoch's, the weights in memory are that checkpoint and were just tested (saves a full pass over
        the test set in most runs; the numbers are the same)."""
        if self.cfg.TEST.FINAL_MODEL == "best_val" and self._best_is_last_epoch and self._last_epoch_tested:
            print("=> The best-on-base model is the last-epoch model, evaluated above: not evaluated again")
            return
        super().test_final_model()

    def after_train(self) -> None:
        """Evaluate the last-epoch model, then the engine's flow (best-on-base model), then results.json."""
        cfg = self.cfg
        last = None
        if not cfg.TEST.NO_TEST:
            last = self._evaluate_last_epoch_model()
        super().after_train()
        if cfg.TEST.NO_TEST:
            return
        if cfg.TEST.FINAL_MODEL == "best_val" and self._loaded_checkpoint is not None:
            best_epoch = int(self._loaded_checkpoint["epoch"])
            best_base = self._loaded_checkpoint.get("val_result")
            if best_base is None:
                best_base = self._val_by_epoch.get(best_epoch)
        else:
            best_epoch, best_base = last["epoch"], last["base"]
        best_new = self._last_test_accuracy
        if last["new"] is None:  # last_step flow: the engine's final test used the last weights
            last["new"] = best_new
        self._report_and_write(best_epoch, best_base, best_new, last)

    def _evaluate_last_epoch_model(self) -> dict:
        epoch = self.max_epoch  # training always ends after MAX_EPOCH epochs (also when resumed)
        print(f"=> Evaluating the last-epoch model (epoch {epoch}) before deploying the final model")
        base = self._val_by_epoch.get(epoch)
        if base is None:
            base = self.test(split="val")
        new = None
        if self.cfg.TEST.FINAL_MODEL == "best_val":
            if self.protocol == "cross" and self.val_loader is not None:
                new = base  # cross: val is the test split itself
            else:
                new = self.test(split="test")
                self._last_epoch_tested = True
        return {"epoch": epoch, "base": base, "new": new}

    def _report_and_write(self, best_epoch: int, best_base: float, best_new: float, last: dict) -> None:
        if self.protocol == "cross":
            best = cross_entry(best_epoch, best_new)
            last_entry = cross_entry(last["epoch"], last["new"])
            print(f"=> Best-on-val model: epoch {best['epoch']}, accuracy {best['accuracy']:.2f}%")
            print(f"=> Last-epoch model: epoch {last_entry['epoch']}, accuracy {last_entry['accuracy']:.2f}%")
        else:
            best = base2novel_entry(best_epoch, best_base, best_new)
            last_entry = base2novel_entry(last["epoch"], last["base"], last["new"])
            for title, entry in (("Best-on-base model", best), ("Last-epoch model", last_entry)):
                print(f"=> {title}: epoch {entry['epoch']}, base {entry['base']:.2f}%, new {entry['new']:.2f}%, "
                      f"HM {entry['hm']:.2f}%")
        results = build_results(self.cfg, self.protocol, best, last_entry)
        path = write_results(self.output_dir, results)
        print(f"Results written to {path}")

    # ----------------------------------------------------------------- checkpoints
    def load_model(self, directory: str, epoch: Optional[int] = None) -> Dict[str, dict]:
        """PromptKD's load (token buffers dropped, non-strict, mismatches reported; see TrainerBase).

        Keeps the student checkpoint's epoch and val result for results.json's best-on-base entry.
        """
        loaded = super().load_model(directory, epoch)
        if STUDENT_MODEL_NAME in loaded:
            self._loaded_checkpoint = loaded[STUDENT_MODEL_NAME]
        return loaded
