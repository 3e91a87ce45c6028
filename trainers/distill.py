"""Shared base of the distillation trainers (PromptKD, PromptKD_RSM, Simple, Simple_RSM).

What every distillation trainer does here:
- data: the engine builds the data with the distillation protocol ``TRAINER.MODAL`` (base2novel:
  train on all classes unlabelled, val = base test images, test = new test images; cross: val = test
  = the target test set), through :meth:`DistillTrainer.data_protocol`;
- the teacher (``trainers.teacher``), whose class text features are computed once and reused for
  every training and test batch; the teacher's image tower runs only in training (no grad, eval mode),
  and with ``TRAINER.PROMPTKD.CACHE_TEACHER_FEATURES`` only once per training image and process
  (``trainers.teacher_cache``; deterministic training transforms only), and with
  ``TRAINER.PROMPTKD.TEACHER_CACHE_DIR`` not at all where ``tools/cache_teacher.py`` stored the features
  of every training view (seeded augmentation); its text encoder is freed once the class features exist;
- the student from ``build_student`` (subclass hook), with the RSM projections attached at
  ``student.rsm`` when the trainer uses RSM (``USES_RSM``), frozen by PromptKD's rule (names with
  ``VPT``, plus ``rsm.*``) and registered as ``VLPromptLearner`` (PromptKD's checkpoint folder and keys);
- the training step: PromptKD's KD loss ``KD_WEIGHT * kd_loss`` plus the RSM term ``omega * H(M)``
  (``trainers.rsm.RSMTerm``; with omega 0 the term is skipped and the run equals the host trainer's);
- evaluation: ``test(split)`` scores the weights in memory with PromptKD's rule (student features
  against the split's slice of the teacher class vectors) and records the accuracy in the run record
  (``trainers.run_record``) under the epoch of those weights, so no state is evaluated twice on a split;
- after training, the last-epoch weights and the best-on-base checkpoint fill the record's two entries
  and ``<OUTPUT_DIR>/results.json`` is written (``trainers.results``).
"""
from __future__ import annotations

from typing import Dict, Optional

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from dassl.data.datasets import num_base_classes
from dassl.data.transforms import require_deterministic_transforms
from dassl.data.transforms.determinism import random_transform_choices
from dassl.engine import TrainerX
from dassl.optim import build_lr_scheduler, build_optimizer
from dassl.utils import UserError, load_pretrained_weights
from datasets.protocols import DISTILL_PROTOCOLS
from trainers import teacher_cache
from trainers.backbone import check_input_size, freeze
from trainers.config import cache_teacher_features, promptkd_kd_weight, read_precision
from trainers.losses import kd_loss
from trainers.promptsrc_model import CHECKPOINT_MODEL_NAME
from trainers.results import EVALUATION_PROTOCOL, build_results, write_evaluation_record, write_results
from trainers.rsm import RSMTerm, describe_unused_keys
from trainers.run_record import RunRecord
from trainers.teacher import TOKEN_BUFFER_KEYS, build_teacher

PRECISION_KEY = "TRAINER.PROMPTKD.PREC"


def is_student_trainable(name: str) -> bool:
    """PromptKD's trainable-parameter rule, extended with the RSM projections.

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
    """The teacher class vectors a split is scored against (PromptKD's evaluation).

    base2novel: ``val`` -> the base classes' rows (the first ceil(n/2)), anything else -> the new
    classes' rows; cross: all rows.
    """
    if protocol == "base2novel":
        n_base = num_base_classes(text_features.shape[0])
        return text_features[:n_base] if split == "val" else text_features[n_base:]
    return text_features


class DistillTrainer(TrainerX):
    """Base class: teacher, cached text features, KD (+ RSM) step, PromptKD's evaluation, results.json."""

    # Free the teacher's text encoder once its class features are cached (memory); a benchmark that
    # times the original's per-step text pass keeps it.
    RELEASE_TEACHER_TEXT_TOWER = True

    USES_RSM = False  # subclasses with the RSM term set True
    # PromptKD's load_model drops the token buffers and loads non-strictly (see TrainerBase.load_model).
    CHECKPOINT_IGNORED_KEYS = TOKEN_BUFFER_KEYS

    # ----------------------------------------------------------------- hooks for subclasses
    def build_student(self, cfg, teacher_dim: int) -> nn.Module:
        """Return the student module (``image_encoder``, ``logit_scale``, ``VPT_image_trans``, ``encode``)."""
        raise NotImplementedError

    # ----------------------------------------------------------------- configuration
    def check_cfg(self, cfg) -> None:
        read_precision(cfg, PRECISION_KEY)
        if cfg.TRAINER.MODAL not in DISTILL_PROTOCOLS:
            raise UserError(f"TRAINER.MODAL must be one of {list(DISTILL_PROTOCOLS)}, got {cfg.TRAINER.MODAL!r}")
        kd_cfg = cfg.TRAINER.PROMPTKD
        if kd_cfg.TEMPERATURE <= 0:
            raise UserError(f"TRAINER.PROMPTKD.TEMPERATURE must be positive, got {kd_cfg.TEMPERATURE}")
        table_weight = promptkd_kd_weight(cfg.DATASET.NAME)
        if kd_cfg.KD_WEIGHT != table_weight:
            print(f"Note: TRAINER.PROMPTKD.KD_WEIGHT is {kd_cfg.KD_WEIGHT}; PromptKD's scripts use {table_weight} "
                  f"for {cfg.DATASET.NAME} (the protocol scripts pass it; set it to reproduce them)")
        self.cache_teacher = cache_teacher_features(cfg)
        if self.cache_teacher:
            require_deterministic_transforms(cfg, teacher_cache.CONFIG_KEY)
        self.rsm_term = RSMTerm.from_cfg(cfg) if self.USES_RSM else None
        if not self.USES_RSM:
            note = describe_unused_keys(cfg)
            if note:
                print(note)

    def data_protocol(self) -> Optional[str]:
        """The distillation protocol the data are built with (``TRAINER.MODAL``)."""
        return self.cfg.TRAINER.MODAL

    @property
    def protocol(self) -> str:
        return self.cfg.TRAINER.MODAL

    # ----------------------------------------------------------------- model
    def build_model(self) -> None:
        cfg = self.cfg
        self.set_precision(read_precision(cfg, PRECISION_KEY))
        classnames = list(self.dm.dataset.classnames)
        self._check_class_split(classnames)

        self.teacher = build_teacher(cfg, classnames, device=self.device)
        if self.RELEASE_TEACHER_TEXT_TOWER:
            self.teacher.release_text_tower()  # its class features are cached
        check_input_size(cfg, self.teacher.model.image_encoder, "teacher")
        if self.device.type == "cuda" and self.precision.autocast_dtype is not None:
            self.teacher.cast_image_tower(self.precision.autocast_dtype)
        self.teacher_disk = self._build_disk_cache() if cfg.TRAINER.PROMPTKD.TEACHER_CACHE_DIR else None
        use_memory_cache = self.cache_teacher and self.teacher_disk is None  # the disk cache replaces it
        self.teacher_cache = self._build_teacher_cache() if use_memory_cache else None
        teacher_dim = self.teacher.text_features.shape[1]

        print("Building custom CLIP")
        student = self.build_student(cfg, teacher_dim)
        check_input_size(cfg, student.image_encoder, "student")
        if self.rsm_term is not None:
            student.rsm = self.rsm_term.build_module(projected_dim=teacher_dim,
                                                     backbone_dim=student.image_encoder.output_dim,
                                                     text_dim=teacher_dim)
            print(self.rsm_term.describe())

        freeze(student, is_student_trainable)
        if cfg.MODEL.INIT_WEIGHTS:
            load_pretrained_weights(student, cfg.MODEL.INIT_WEIGHTS)

        student.to(self.device)
        self.student = student
        self.model = student  # the engine's default model_inference / name
        self.optim = build_optimizer(student, cfg.OPTIM)
        self.sched = build_lr_scheduler(self.optim, cfg.OPTIM)
        self.register_model(CHECKPOINT_MODEL_NAME, student, self.optim, self.sched)
        self.record = RunRecord(self.protocol)
        self.weights_epoch = 0  # the epoch whose weights are in memory (0: as built)
        self.evaluation_passes = 0  # passes over an evaluation split made by this trainer

    def _build_teacher_cache(self) -> teacher_cache.TeacherOutputCache:
        """The teacher-feature cache of this teacher and data (shared with earlier runs in this process)."""
        store = teacher_cache.store_for(teacher_cache.cache_key(self.cfg, self.teacher, self.device))
        n_train = len(self.dm.dataset.train_x)
        if store:
            print(f"Teacher cache ({teacher_cache.CONFIG_KEY}): reused, {len(store)} training images already "
                  f"cached by an earlier run in this process ({n_train} in this run)")
        else:
            print(f"Teacher cache ({teacher_cache.CONFIG_KEY}): new, filled as training first sees each of "
                  f"the {n_train} training images")
        return teacher_cache.TeacherOutputCache(self.teacher, store)

    def teacher_disk_key(self) -> dict:
        """The disk-cache key of this run's teacher, training data and augmentation
        (`teacher_cache.disk_cache_key`); a ``UserError`` when random views are not reproducible."""
        random_ops = random_transform_choices(self.cfg)
        seed = self.dm.augmentation_seed
        if random_ops and seed is None:
            raise UserError(f"{teacher_cache.DIR_KEY} with the random INPUT.TRANSFORMS {random_ops} needs "
                            f"DATALOADER.SEEDED_AUGMENTATION True (each view a function of seed, epoch and "
                            f"image), or deterministic transforms only")
        impaths = [item.impath for item in self.dm.dataset.train_x]
        return teacher_cache.disk_cache_key(self.cfg, self.teacher, self.device, seed if random_ops else None,
                                            impaths)

    def _build_disk_cache(self) -> teacher_cache.DiskTeacherCache:
        """The reader of ``TEACHER_CACHE_DIR`` (refused when the folder holds no cache or another key's)."""
        folder = self.cfg.TRAINER.PROMPTKD.TEACHER_CACHE_DIR
        files = teacher_cache.TeacherFeatureFiles(folder, self.teacher_disk_key())
        if not files.check_key():
            raise UserError(f"{teacher_cache.DIR_KEY} {folder} holds no teacher cache: run tools/cache_teacher.py "
                            f"with this run's arguments first, or set {teacher_cache.DIR_KEY} ''")
        print(f"Teacher cache ({teacher_cache.DIR_KEY}): reading {folder}, epochs {files.epochs()}")
        return teacher_cache.DiskTeacherCache(self.teacher, files)

    @property
    def text_features(self) -> torch.Tensor:
        """The teacher's cached, normalised class vectors [n_cls, E] (all classes, label order)."""
        return self.teacher.text_features

    def _check_class_split(self, classnames) -> None:
        base = getattr(self.dm.dataset, "base_classnames", None)
        expected = num_base_classes(len(classnames))
        if self.protocol == "base2novel" and base is not None and len(base) != expected:
            raise UserError(f"base2novel expects the first {expected} of {len(classnames)} classes as base, but "
                            f"the dataset reports {len(base)} base classes")

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
            if self.teacher_disk is not None:
                teacher_logits = self.teacher_disk.logits(image, batch["index"], self.epoch)
            elif self.teacher_cache is not None:
                teacher_logits = self.teacher_cache.logits(image, batch["impath"])
            else:
                teacher_logits = self.teacher.logits(image)
            backbone_features, projected = self.student.encode(image)
            image_features = F.normalize(projected, dim=-1)
            logits = self.student_logits(image_features, self.text_features)
        loss_kd = kd_cfg.KD_WEIGHT * kd_loss(logits, teacher_logits, kd_cfg.TEMPERATURE)
        loss = loss_kd
        summary = {}
        rsm = None
        if self.rsm_term is not None:
            with self.precision.autocast():
                rsm = self.rsm_term.loss(self.student.rsm, backbone_features, projected, self.text_features)
        if rsm is not None:
            loss_rsm, rsm_summary = rsm
            loss = loss_kd + loss_rsm
            summary = {"kd": loss_kd.item(), **{key: value.item() for key, value in rsm_summary.items()}}
        self.model_backward_and_update(loss)
        if self.batch_idx + 1 == self.num_batches:
            self.update_lr()
        return {"loss": loss.item(), **summary}

    def run_epoch(self) -> None:
        super().run_epoch()
        self.weights_epoch = self.epoch + 1

    def before_train(self) -> None:
        super().before_train()  # may resume: the weights in memory are then those after start_epoch
        self.weights_epoch = self.start_epoch

    # ----------------------------------------------------------------- evaluation
    @torch.no_grad()
    def evaluate(self, split: str) -> float:
        """Accuracy (%) of the weights in memory on ``split`` ("val" or "test"), with PromptKD's rule."""
        self.set_model_mode("eval")
        self.evaluator.reset()
        loader = self.val_loader if split == "val" else self.test_loader
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
        return float(list(results.values())[0])

    def test(self, split: Optional[str] = None) -> float:
        """Accuracy of the weights in memory on ``split`` (default ``TEST.SPLIT``; val falls back to test).

        A function of (split, weights): the run record keeps every result under the epoch of the weights,
        and a split those weights were already scored on is not evaluated again.
        """
        split = split or self.cfg.TEST.SPLIT
        if split != "val" or self.val_loader is None:
            split = "test"
        accuracy = self.record.get(self.weights_epoch, split)
        if accuracy is None:
            accuracy = self.evaluate(split)
            self.record.add(self.weights_epoch, split, accuracy)
            self.evaluation_passes += 1
        return accuracy

    def test_final_model(self) -> None:
        """Fill the record's two entries: the last-epoch weights, then the best-on-base checkpoint."""
        last = self.weights_epoch
        print(f"=> Evaluating the last-epoch model (epoch {last})")
        for split in self.record.missing(last):
            self.test(split)
        best = last
        if self.cfg.TEST.FINAL_MODEL == "best_val":
            validated = self.record.val_by_epoch
            if set(validated) == set(range(1, last + 1)) and self.record.best_epoch == last:
                print(f"=> The best-on-base model is the last-epoch model (epoch {last}): not loaded again")
            else:
                print("Deploy the model with the best val performance")
                self.load_model(self.output_dir)
                best = self.weights_epoch
                for split in self.record.missing(best):
                    self.test(split)
        self.final_epochs = {"best": best, "last": last}

    def after_train(self) -> None:
        """The engine's end of training (final evaluation), then results.json."""
        self.final_epochs: Optional[Dict[str, int]] = None
        super().after_train()
        if self.final_epochs is not None:
            self.write_results(self.final_epochs["best"], self.final_epochs["last"])

    def write_results(self, best_epoch: int, last_epoch: int) -> str:
        """Print both entries and write ``<OUTPUT_DIR>/results.json``; returns its path."""
        best, last = self.record.entry(best_epoch), self.record.entry(last_epoch)
        if self.protocol == "cross":
            print(f"=> Best-on-val model: epoch {best['epoch']}, accuracy {best['accuracy']:.2f}%")
            print(f"=> Last-epoch model: epoch {last['epoch']}, accuracy {last['accuracy']:.2f}%")
        else:
            for title, entry in (("Best-on-base model", best), ("Last-epoch model", last)):
                print(f"=> {title}: epoch {entry['epoch']}, base {entry['base']:.2f}%, new {entry['new']:.2f}%, "
                      f"HM {entry['hm']:.2f}%")
        results = build_results(self.cfg, self.protocol, best, last)
        # The real per-class sample counts when DATASET.NUM_SHOTS asked for more than some class has.
        shots_per_class = getattr(self.dm.dataset, "shots_per_class", None)
        if shots_per_class is not None:
            results["shots_per_class"] = shots_per_class
        path = write_results(self.output_dir, results)
        print(f"Results written to {path}")
        return path

    def evaluate_loaded_model(self, directory: str) -> float:
        """``--eval-only``: score the loaded weights on every split of the protocol (base2novel: base and new)
        and record a results.json marked as evaluation-only; returns the ``TEST.SPLIT`` accuracy."""
        for split in self.record.missing(self.weights_epoch):
            self.test(split)
        entry = self.record.entry(self.weights_epoch)
        extra = {"eval_only": True, "evaluated_protocol": self.protocol, "model_dir": directory or ""}
        write_evaluation_record(self.output_dir,
                                build_results(self.cfg, EVALUATION_PROTOCOL, entry, dict(entry), extra=extra))
        return self.test()

    # ----------------------------------------------------------------- checkpoints
    def load_model(self, directory: str, epoch: Optional[int] = None) -> Dict[str, dict]:
        """PromptKD's load (token buffers dropped, non-strict, mismatches reported; see TrainerBase).

        The weights in memory are then those of the checkpoint's epoch. Its stored val result is not put
        into the record: an evaluation-only run may score the checkpoint on other data.
        """
        loaded = super().load_model(directory, epoch)
        info = loaded.get(CHECKPOINT_MODEL_NAME)
        if info and info.get("epoch") is not None:
            self.weights_epoch = int(info["epoch"])
        return loaded

    def run_state(self) -> dict:
        """What a resumed run needs besides weights: the evaluation record."""
        return {"record": self.record.state_dict()}

    def load_run_state(self, state: dict) -> None:
        if state.get("record"):
            self.record.load_state_dict(state["record"])
