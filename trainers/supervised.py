"""Shared base of the supervised prompt learners (CoOp, CoCoOp, IVLP, MaPLe, PromptSRC).

What every supervised prompt learner does here:

- data: CoOp's splits (no distillation protocol), subsampled by ``DATASET.SUBSAMPLE_CLASSES``; training
  uses the labels (``DATASET.NUM_SHOTS`` per class);
- model: the subclass builds it (:meth:`SupervisedPromptTrainer.build_custom_clip`) on the backbone of
  ``trainers.backbone``; it is frozen by the method's rule (:meth:`is_trainable`); the module that the
  method optimises and saves (:meth:`trained_module`: CoOp's prompt learner, or the whole model) is
  registered under the method's checkpoint folder name (``MODEL_NAME``), so the originals' checkpoints
  load; loading drops the token buffers (``CHECKPOINT_IGNORED_KEYS``), which are rebuilt from the current
  class names;
- training step: mean cross-entropy of the logits over the training classes (:func:`supervised_loss`),
  scheduler stepped once per epoch;
- final evaluation (CoOp's base-to-new protocol in one run): with ``SUBSAMPLE_CLASSES base`` the model
  is scored on the base classes' ``TEST.SPLIT`` and then on the new classes' ``TEST.SPLIT``, after
  :meth:`set_classnames` rebuilt the class-dependent prompt parts for the new class names (the learnt
  context is kept) — what the originals' separate ``--eval-only ... SUBSAMPLE_CLASSES new`` run does.
  results.json gets protocol ``base2new``. With ``all`` (or ``new``) the run is scored on its own classes
  (protocol ``fewshot``). Model selection follows ``TEST.FINAL_MODEL``: the published configs keep the
  last epoch (best = last); with ``best_val`` the last-epoch weights are scored first, then the best-on-val
  checkpoint;
- evaluation-only runs (``train.py --eval-only``): the classes of ``SUBSAMPLE_CLASSES`` on
  ``TEST.SPLIT``, written to results.json as protocol ``evaluation`` (never over the results.json of a
  training run).

The model (duck-typed) has ``image_encoder`` (the CLIP vision tower), ``forward(image)`` (logits over the
current classes, used in training), ``class_features()`` (what the images are scored against, computed
once per evaluation pass; ``None`` for CoCoOp, whose text side depends on the image),
``logits(image, class_features)`` and ``set_classnames(names)``.
"""
from __future__ import annotations

from typing import Dict, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from dassl.data import build_data_loader
from dassl.data.datasets import build_dataset
from dassl.engine import TrainerX
from dassl.evaluation import build_evaluator
from dassl.metrics import compute_accuracy
from dassl.optim import build_lr_scheduler, build_optimizer
from dassl.utils import UserError, load_pretrained_weights
from datasets.protocols import check_subsample
from trainers.backbone import check_input_size, freeze
from trainers.config import read_precision
from trainers.results import (base2novel_entry, build_results, cross_entry, evaluation_results,
                              write_evaluation_record, write_results)
from trainers.rsm import describe_unused_keys

BASE2NEW = "base2new"
ALL_CLASSES = "fewshot"


def supervised_loss(logits: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy over the batch: the training loss of CoOp, CoCoOp, IVLP and MaPLe."""
    return F.cross_entropy(logits, label)


def results_protocol(subsample: str) -> str:
    """``base2new`` for a run on the base classes (scored on base and new), else ``fewshot``."""
    return BASE2NEW if subsample == "base" else ALL_CLASSES


class SupervisedPromptTrainer(TrainerX):
    """Base class: build / freeze / register the model, CE step, base-to-new evaluation, results.json."""

    PRECISION_KEY = ""  # the method's precision key, e.g. "TRAINER.COOP.PREC"
    MODEL_NAME = ""  # registered model name = checkpoint folder, as in the original
    LOGS_ACCURACY = False  # CoOp also logs the batch accuracy

    # ----------------------------------------------------------------- hooks for subclasses
    def build_custom_clip(self, cfg, classnames: Sequence[str]) -> nn.Module:
        """Return the method's model for ``classnames`` (see the module docstring for its interface)."""
        raise NotImplementedError

    def is_trainable(self, name: str) -> bool:
        """The method's rule: whether the model parameter ``name`` is trained."""
        raise NotImplementedError

    def trained_module(self) -> nn.Module:
        """The module the method optimises, saves and loads (default: the whole model)."""
        return self.model

    # ----------------------------------------------------------------- configuration and model
    def check_cfg(self, cfg) -> None:
        read_precision(cfg, self.PRECISION_KEY)
        check_subsample(cfg.DATASET.SUBSAMPLE_CLASSES)
        note = None if getattr(self, "USES_RSM", False) else describe_unused_keys(cfg)
        if note:
            print(note)

    @property
    def protocol(self) -> str:
        return results_protocol(self.cfg.DATASET.SUBSAMPLE_CLASSES)

    def build_model(self) -> None:
        cfg = self.cfg
        self.classnames = list(self.dm.dataset.classnames)
        print("Building custom CLIP")
        self.model = self.build_custom_clip(cfg, self.classnames)
        check_input_size(cfg, self.model.image_encoder, "backbone")
        freeze(self.model, self.is_trainable)
        module = self.trained_module()
        if cfg.MODEL.INIT_WEIGHTS:
            load_pretrained_weights(module, cfg.MODEL.INIT_WEIGHTS)
        self.model.to(self.device)
        self.optim = build_optimizer(module, cfg.OPTIM)
        self.sched = build_lr_scheduler(self.optim, cfg.OPTIM)
        self.register_model(self.MODEL_NAME, module, self.optim, self.sched)
        self.set_precision(read_precision(cfg, self.PRECISION_KEY))
        self.final_entries: Optional[Dict[str, dict]] = None
        self.loaded_from: Tuple[str, int] = ("", 0)  # (folder, epoch) of the weights last loaded
        self._new_class_data = None

    # ----------------------------------------------------------------- training
    def parse_batch_train(self, batch):
        return batch["img"].to(self.device), batch["label"].to(self.device)

    def forward_backward(self, batch) -> Dict[str, float]:
        image, label = self.parse_batch_train(batch)
        with self.precision.autocast():
            logits = self.model(image)
            loss = supervised_loss(logits, label)
        self.model_backward_and_update(loss)
        summary = {"loss": loss.item()}
        if self.LOGS_ACCURACY:
            summary["acc"] = compute_accuracy(logits, label)[0].item()
        if self.batch_idx + 1 == self.num_batches:
            self.update_lr()
        return summary

    # ----------------------------------------------------------------- evaluation
    @torch.no_grad()
    def evaluate(self, loader, evaluator, split: str, title: str = "") -> float:
        """Top-1 accuracy (%) of the weights in memory on ``loader`` (class features computed once)."""
        self.set_model_mode("eval")
        evaluator.reset()
        print(f"Evaluate on the *{split}* set{title}")
        with self.precision.autocast():
            class_features = self.model.class_features()
        for batch in tqdm(loader):
            image, label = self.parse_batch_test(batch)
            with self.precision.autocast():
                output = self.model.logits(image, class_features)
            evaluator.process(output.float(), label)
        results = evaluator.evaluate()
        for key, value in results.items():
            if isinstance(value, (int, float)):
                self.write_scalar(f"{split}/{key}", value, self.epoch)
        return float(list(results.values())[0])

    def resolve_split(self, split: Optional[str]) -> str:
        """``split`` (default ``TEST.SPLIT``); ``val`` falls back to ``test`` when there is no val split."""
        split = split or self.cfg.TEST.SPLIT
        return "val" if split == "val" and self.val_loader is not None else "test"

    def test(self, split: Optional[str] = None) -> float:
        """Accuracy of the weights in memory on ``split`` (default ``TEST.SPLIT``) of the current classes."""
        split = self.resolve_split(split)
        loader = self.val_loader if split == "val" else self.test_loader
        return self.evaluate(loader, self.evaluator, split)

    def evaluate_loaded_model(self, directory: str) -> float:
        """``--eval-only``: score the loaded weights on ``TEST.SPLIT`` and record a results.json marked as such."""
        split = self.resolve_split(None)
        accuracy = self.test(split)
        self.write_evaluation_results(accuracy, split)
        return accuracy

    def new_class_data(self, split: str):
        """(loader, evaluator, class names) of the new classes' ``split`` (built once per run)."""
        if self._new_class_data is None or self._new_class_data[0] != split:
            new_cfg = self.cfg.clone()
            new_cfg.defrost()
            new_cfg.DATASET.SUBSAMPLE_CLASSES = "new"
            new_cfg.freeze()
            dataset = build_dataset(new_cfg)
            items = dataset.val if split == "val" and dataset.val else dataset.test
            if not items:
                raise UserError(f"{self.cfg.DATASET.NAME} has no new classes with {split} images to score "
                                f"(DATASET.SUBSAMPLE_CLASSES base needs at least two classes)")
            loader = build_data_loader(new_cfg, sampler_type=new_cfg.DATALOADER.TEST.SAMPLER, data_source=items,
                                       batch_size=new_cfg.DATALOADER.TEST.BATCH_SIZE, tfm=self.dm.tfm_test,
                                       is_train=False)
            evaluator = build_evaluator(new_cfg, lab2cname=dataset.lab2cname)
            self._new_class_data = (split, loader, evaluator, list(dataset.classnames))
        return self._new_class_data[1:]

    def evaluate_new_classes(self, split: str) -> float:
        """Accuracy on the new classes: their prompts rebuilt around the learnt context, then restored."""
        loader, evaluator, new_names = self.new_class_data(split)
        self.model.set_classnames(new_names)
        try:
            return self.evaluate(loader, evaluator, split, title=f" of the {len(new_names)} new classes")
        finally:
            self.model.set_classnames(self.classnames)

    def evaluate_protocol(self, epoch: int) -> dict:
        """The results.json entry of the weights in memory (those of ``epoch``)."""
        split = self.resolve_split(None)
        accuracy = self.test(split)
        if self.protocol == BASE2NEW:
            return base2novel_entry(epoch, accuracy, self.evaluate_new_classes(split))
        return cross_entry(epoch, accuracy)

    def test_final_model(self) -> Optional[float]:
        """Score the last-epoch weights and, with ``TEST.FINAL_MODEL best_val``, the best-on-val checkpoint."""
        last_epoch = self.max_epoch
        print(f"Deploy the last-epoch model (epoch {last_epoch})")
        last = self.evaluate_protocol(last_epoch)
        best = last
        if self.cfg.TEST.FINAL_MODEL == "best_val":
            print("Deploy the model with the best val performance")
            loaded = self.load_model(self.output_dir)
            best_epoch = loaded.get(self.MODEL_NAME, {}).get("epoch") or last_epoch
            if best_epoch != last_epoch:
                best = self.evaluate_protocol(int(best_epoch))
        self.final_entries = {"best": best, "last": last}
        return best.get("base", best.get("accuracy"))

    def after_train(self) -> None:
        """The engine's end of training (the final evaluation above), then results.json."""
        self.final_entries = None
        super().after_train()
        if self.final_entries is not None:
            self.write_run_results()
        else:
            print("Note: TEST.NO_TEST is set, so the final model was not evaluated and no results.json is written")

    # ----------------------------------------------------------------- results.json
    def results_extra(self) -> dict:
        return {"subsample": self.cfg.DATASET.SUBSAMPLE_CLASSES, "split": self.resolve_split(None)}

    def write_run_results(self) -> str:
        """Print the final entries and write ``<OUTPUT_DIR>/results.json``; returns its path."""
        best, last = self.final_entries["best"], self.final_entries["last"]
        for title, entry in (("Final model", best), ("Last-epoch model", last)):
            if self.protocol == BASE2NEW:
                print(f"=> {title}: epoch {entry['epoch']}, base {entry['base']:.2f}%, new {entry['new']:.2f}%, "
                      f"HM {entry['hm']:.2f}%")
            else:
                print(f"=> {title}: epoch {entry['epoch']}, accuracy {entry['accuracy']:.2f}%")
        record = build_results(self.cfg, self.protocol, best, last, extra=self.results_extra())
        path = write_results(self.output_dir, record)
        print(f"Results written to {path}")
        return path

    def write_evaluation_results(self, accuracy: float, split: str) -> Optional[str]:
        """results.json of an evaluation-only run; a training run's results.json there is kept."""
        directory, epoch = self.loaded_from
        return write_evaluation_record(self.output_dir, evaluation_results(self.cfg, accuracy, epoch, directory,
                                                                           split))

    # ----------------------------------------------------------------- checkpoints
    def load_model(self, directory: str, epoch: Optional[int] = None) -> Dict[str, dict]:
        """The originals' load: token buffers dropped (rebuilt for the current classes), the rest non-strict."""
        loaded = super().load_model(directory, epoch)
        info = loaded.get(self.MODEL_NAME)
        if info is not None:
            self.loaded_from = (directory, int(info["epoch"]) if info.get("epoch") is not None else 0)
        return loaded


__all__ = ["ALL_CLASSES", "BASE2NEW", "SupervisedPromptTrainer", "results_protocol", "supervised_loss"]
