"""Shared base of the distillation trainers (PromptKD, PromptKD_RSM, Simple, Simple_RSM).

What every distillation trainer does here:
- data: the engine builds the data with the distillation protocol ``TRAINER.MODAL`` (base2novel:
  train on all classes unlabelled, val = base test images, test = new test images; base_only: as
  base2novel but train on the base classes' images only; cross: val = test = the target test set),
  through :meth:`DistillTrainer.data_protocol`;
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

The class vectors of training (:func:`training_class_vectors`): all classes under base2novel and cross
(PromptKD); the base classes only under base_only, for the teacher's logits, the student's logits and
the RSM term alike, so no new class (image or name) enters training there. Evaluation is the same for
base2novel and base_only (base rows for val, new rows for test). The teacher is built for every class
name, so the new classes' vectors exist for evaluation; they are not used before it.

Model selection on held-out training images (``TRAINER.PROMPTKD.SELECT_HOLDOUT`` = fraction > 0): the
fraction of training images chosen by ``datasets.protocols.holdout_split`` (seed + image paths) is
removed from training. After every epoch the agreement with the teacher on them (% of held-out images
where the student's argmax equals the teacher's, over the training class vectors, on the test
transform) goes into the run record, summed over all processes; on a strict improvement the weights
are saved as ``<OUTPUT_DIR>/VLPromptLearner/model-agreement.pth.tar`` (the engine's checkpoint layout),
so the selected epoch is the earliest with the highest agreement. At the end it is scored on base and
new and results.json gets ``selected_by_agreement`` beside ``best`` and ``last``.
"""
from __future__ import annotations

import os.path as osp
from typing import Dict, List, Optional

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from dassl.data.data_manager import build_data_loader as build_loader
from dassl.data.datasets import num_base_classes
from dassl.data.transforms import require_deterministic_transforms
from dassl.data.transforms.determinism import random_transform_choices
from dassl.engine import TrainerX
from dassl.optim import build_lr_scheduler, build_optimizer
from dassl.utils import UserError, load_checkpoint, load_pretrained_weights
from dassl.utils.distributed import all_gather_objects, is_main_process
from dassl.utils.torchtools import save_checkpoint
from datasets.protocols import (BASE_NEW_DISTILL_PROTOCOLS, DISTILL_PROTOCOLS, HOLDOUT_KEY, check_holdout_fraction,
                                holdout_split)
from trainers import teacher_cache
from trainers.backbone import check_input_size, freeze
from trainers.config import cache_teacher_features, promptkd_kd_weight, read_precision
from trainers.losses import kd_loss
from trainers.promptsrc_model import CHECKPOINT_MODEL_NAME
from trainers.results import (EVALUATION_PROTOCOL, SELECTED_BY_AGREEMENT, build_results, write_evaluation_record,
                              write_results)
from trainers.rsm import RSMTerm, describe_unused_keys
from trainers.run_record import RunRecord
from trainers.teacher import TOKEN_BUFFER_KEYS, build_teacher

PRECISION_KEY = "TRAINER.PROMPTKD.PREC"
# The agreement-selected weights, beside the engine's model-best.pth.tar in the model folder.
AGREEMENT_FILE_NAME = "model-agreement.pth.tar"


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

    base2novel and base_only: ``val`` -> the base classes' rows (the first ceil(n/2)), anything else ->
    the new classes' rows; cross: all rows.
    """
    if protocol in BASE_NEW_DISTILL_PROTOCOLS:
        n_base = num_base_classes(text_features.shape[0])
        return text_features[:n_base] if split == "val" else text_features[n_base:]
    return text_features


def training_class_vectors(text_features: torch.Tensor, protocol: str) -> torch.Tensor:
    """The class vectors of the training logits (teacher and student) and of the RSM term.

    base_only: the base classes' rows only (fully inductive: nothing of a new class enters training);
    base2novel and cross: every row, as PromptKD (the same tensor, so those runs are unchanged).
    """
    if protocol == "base_only":
        return text_features[:num_base_classes(text_features.shape[0])]
    return text_features


class DistillTrainer(TrainerX):
    """Base class: teacher, cached text features, KD (+ RSM) step, PromptKD's evaluation, results.json."""

    # Free the teacher's text encoder once its class features are cached (memory); a benchmark that
    # times the original's per-step text pass keeps it.
    RELEASE_TEACHER_TEXT_TOWER = True

    USES_RSM = False  # subclasses with the RSM term set True
    # PromptKD's load_model drops the token buffers and loads non-strictly (see TrainerBase.load_model).
    CHECKPOINT_IGNORED_KEYS = TOKEN_BUFFER_KEYS
    # The agreement-selected weights travel with model-best when a run resumes from another folder.
    SELECTED_CHECKPOINT_FILES = (*TrainerX.SELECTED_CHECKPOINT_FILES, AGREEMENT_FILE_NAME)

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
        self.holdout_fraction = check_holdout_fraction(kd_cfg.SELECT_HOLDOUT)
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

    def build_data_loader(self) -> None:
        """The engine's data, then (``SELECT_HOLDOUT`` > 0) the held-out training images taken out of
        training: the training list and loader are rebuilt without them, and they get an evaluation
        loader (test transform; one disjoint shard per process)."""
        super().build_data_loader()
        self.holdout_items: List = []
        self.holdout_loader = None
        if not self.holdout_fraction:
            return
        cfg, dm = self.cfg, self.dm
        kept, held = holdout_split(dm.dataset.train_x, self.holdout_fraction, cfg.SEED, cfg.DATASET.ROOT)
        # The dataset's training list becomes the kept images, so everything keyed by it (the teacher
        # disk cache, tools/cache_teacher.py) sees the list that is trained on.
        dm.dataset.keep_train_x(kept)
        loaders = cfg.DATALOADER
        dm.train_loader_x = build_loader(
            cfg, sampler_type=loaders.TRAIN_X.SAMPLER, data_source=kept, batch_size=loaders.TRAIN_X.BATCH_SIZE,
            n_domain=loaders.TRAIN_X.N_DOMAIN, n_ins=loaders.TRAIN_X.N_INS, tfm=dm.tfm_train, is_train=True,
            augmentation_seed=dm.augmentation_seed)
        self.train_loader_x = dm.train_loader_x
        self.holdout_items = held
        self.holdout_loader = build_loader(cfg, sampler_type=loaders.TEST.SAMPLER, data_source=held,
                                           batch_size=loaders.TEST.BATCH_SIZE, tfm=dm.tfm_test, is_train=False)
        print(f"{HOLDOUT_KEY} {self.holdout_fraction}: {len(held)} of {len(kept) + len(held)} training images held "
              f"out for model selection by agreement with the teacher (seed {cfg.SEED})")

    # ----------------------------------------------------------------- model
    def build_model(self) -> None:
        cfg = self.cfg
        self.set_precision(read_precision(cfg, PRECISION_KEY))
        classnames = self._teacher_classnames()
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
        self._holdout_teacher: Dict[str, int] = {}  # held-out image -> the teacher's argmax (fixed)
        self._new_agreement: Optional[float] = None
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

    @property
    def train_class_vectors(self) -> torch.Tensor:
        """The class vectors of training (:func:`training_class_vectors`: base rows only under base_only)."""
        return training_class_vectors(self.text_features, self.protocol)

    def _teacher_classnames(self) -> List[str]:
        """Every class name in label order. Under base_only the training list holds only base classes,
        so the names come from the reader's ``base_classnames`` + ``new_classnames``."""
        dataset = self.dm.dataset
        if self.protocol != "base_only":
            return list(dataset.classnames)
        base, new = list(getattr(dataset, "base_classnames", [])), list(getattr(dataset, "new_classnames", []))
        if not new or list(dataset.classnames) != base:
            raise UserError(f"TRAINER.MODAL base_only needs a reader that names the base and the new classes "
                            f"({dataset.__class__.__name__} gives base {base}, new {new}, training classes "
                            f"{list(dataset.classnames)}); use base2novel with this dataset")
        return base + new

    def _check_class_split(self, classnames) -> None:
        base = getattr(self.dm.dataset, "base_classnames", None)
        expected = num_base_classes(len(classnames))
        if self.protocol in BASE_NEW_DISTILL_PROTOCOLS and base is not None and len(base) != expected:
            raise UserError(f"{self.protocol} expects the first {expected} of {len(classnames)} classes as base, "
                            f"but the dataset reports {len(base)} base classes")

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
        class_vectors = self.train_class_vectors
        with self.precision.autocast():
            if self.teacher_disk is not None:
                teacher_logits = self.teacher_disk.logits(image, batch["index"], self.epoch, class_vectors)
            elif self.teacher_cache is not None:
                teacher_logits = self.teacher_cache.logits(image, batch["impath"], class_vectors)
            else:
                teacher_logits = self.teacher.logits(image, class_vectors)
            backbone_features, projected = self.student.encode(image)
            image_features = F.normalize(projected, dim=-1)
            logits = self.student_logits(image_features, class_vectors)
        loss_kd = kd_cfg.KD_WEIGHT * kd_loss(logits, teacher_logits, kd_cfg.TEMPERATURE)
        loss = loss_kd
        summary = {}
        rsm = None
        if self.rsm_term is not None:
            with self.precision.autocast():
                rsm = self.rsm_term.loss(self.student.rsm, backbone_features, projected, class_vectors)
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

    # ----------------------------------------------------------------- model selection by agreement
    def after_epoch(self) -> None:
        """The engine's validation, then (``SELECT_HOLDOUT`` > 0) the held-out agreement of this epoch."""
        super().after_epoch()
        self._new_agreement = None
        if self.holdout_loader is None:
            return
        agreement = self.measure_agreement()
        self.record.add_agreement(self.weights_epoch, agreement)
        print(f"Agreement with the teacher on {len(self.holdout_items)} held-out training images: {agreement:.2f}%")
        if self.record.agreement_epoch == self.weights_epoch:  # strictly above every earlier epoch
            self._new_agreement = agreement

    @torch.no_grad()
    def _holdout_teacher_argmax(self, image: torch.Tensor, keys: List[str], class_vectors: torch.Tensor
                                ) -> torch.Tensor:
        """The teacher's argmax per held-out image (computed once: teacher and test transform are fixed)."""
        missing = [i for i, key in enumerate(keys) if key not in self._holdout_teacher]
        if missing:
            rows = image if len(missing) == len(keys) else image[torch.tensor(missing, device=image.device)]
            predictions = self.teacher.logits(rows, class_vectors).argmax(dim=1).tolist()
            for i, prediction in zip(missing, predictions):
                self._holdout_teacher[keys[i]] = int(prediction)
        return torch.tensor([self._holdout_teacher[key] for key in keys], device=image.device)

    @torch.no_grad()
    def measure_agreement(self) -> float:
        """% of held-out training images where argmax(student logits) == argmax(teacher logits), both over
        the training class vectors; every held-out image counted once over all processes."""
        self.set_model_mode("eval")
        class_vectors = self.train_class_vectors
        agree = total = 0
        for batch in self.holdout_loader:
            image = batch["img"].to(self.device)
            with self.precision.autocast():
                teacher = self._holdout_teacher_argmax(image, list(batch["impath"]), class_vectors)
                image_features, _ = self.student(image)
                student = self.student_logits(image_features, class_vectors).argmax(dim=1)
            agree += int((student == teacher).sum())
            total += int(image.shape[0])
        counts = all_gather_objects((agree, total))  # each process scored its own disjoint shard
        agree, total = sum(c[0] for c in counts), sum(c[1] for c in counts)
        return 100.0 * agree / total

    def save_epoch_checkpoints(self) -> None:
        """``model-agreement.pth.tar`` when this epoch's agreement is a new best, then the engine's files.

        Written without moving Dassl's ``checkpoint`` pointer, so it is never taken for a resume point.
        """
        if self._new_agreement is not None and is_main_process():
            for name in self.get_model_names():
                save_checkpoint(self._checkpoint_state(name, self.epoch, self._new_agreement),
                                osp.join(self.output_dir, name), model_name=AGREEMENT_FILE_NAME,
                                update_pointer=False)
        super().save_epoch_checkpoints()

    def load_agreement_model(self, directory: str) -> int:
        """Load ``<directory>/VLPromptLearner/model-agreement.pth.tar`` (PromptKD's load rule); returns its epoch."""
        path = osp.join(directory, CHECKPOINT_MODEL_NAME, AGREEMENT_FILE_NAME)
        checkpoint = load_checkpoint(path)
        print(f'Loading the agreement-selected weights from "{path}" (epoch = {checkpoint.get("epoch")})')
        self._load_non_strict(self.student, checkpoint["state_dict"], tuple(self.CHECKPOINT_IGNORED_KEYS),
                              source=path)
        self.weights_epoch = int(checkpoint["epoch"])
        return self.weights_epoch

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
        selected = self.record.agreement_epoch
        if selected is not None:
            if self.record.missing(selected):
                loaded = self.load_agreement_model(self.output_dir)
                if loaded != selected:
                    raise RuntimeError(f"{AGREEMENT_FILE_NAME} holds epoch {loaded}, the record selects {selected}")
                for split in self.record.missing(selected):
                    self.test(split)
            print(f"=> The agreement-selected model is epoch {selected}")
            self.final_epochs[SELECTED_BY_AGREEMENT] = selected

    def after_train(self) -> None:
        """The engine's end of training (final evaluation), then results.json."""
        self.final_epochs: Optional[Dict[str, int]] = None
        super().after_train()
        if self.final_epochs is not None:
            self.write_results(self.final_epochs["best"], self.final_epochs["last"],
                               self.final_epochs.get(SELECTED_BY_AGREEMENT))

    def write_results(self, best_epoch: int, last_epoch: int, selected_epoch: Optional[int] = None) -> str:
        """Print the entries and write ``<OUTPUT_DIR>/results.json``; returns its path.

        ``selected_epoch`` (held-out model selection) adds the ``selected_by_agreement`` entry.
        """
        best, last = self.record.entry(best_epoch), self.record.entry(last_epoch)
        if self.protocol == "cross":
            print(f"=> Best-on-val model: epoch {best['epoch']}, accuracy {best['accuracy']:.2f}%")
            print(f"=> Last-epoch model: epoch {last['epoch']}, accuracy {last['accuracy']:.2f}%")
        else:
            for title, entry in (("Best-on-base model", best), ("Last-epoch model", last)):
                print(f"=> {title}: epoch {entry['epoch']}, base {entry['base']:.2f}%, new {entry['new']:.2f}%, "
                      f"HM {entry['hm']:.2f}%")
        extra = {}
        if selected_epoch is not None:
            selected = {**self.record.selected_entry(selected_epoch), "holdout_images": len(self.holdout_items)}
            print(f"=> Agreement-selected model: {selected}")
            extra[SELECTED_BY_AGREEMENT] = selected
        results = build_results(self.cfg, self.protocol, best, last, extra=extra)
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
