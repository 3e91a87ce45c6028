"""A toy dataset (tiny image folder) and a toy trainer (linear probe) for the engine tests.

Importing this module registers ``ToyFolder`` in DATASET_REGISTRY and ``ToyLinearProbe`` in
TRAINER_REGISTRY. Everything is small enough to train a few epochs in well under a second.
"""
from __future__ import annotations

import os
import os.path as osp
from pathlib import Path
from typing import List

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image

from dassl.config import get_cfg_default
from dassl.data.datasets import DATASET_REGISTRY, DatasetBase, Datum
from dassl.engine import TRAINER_REGISTRY, TrainerX
from dassl.metrics import compute_accuracy
from dassl.optim import build_lr_scheduler, build_optimizer
from dassl.run_files import RESULTS_FILENAME
from dassl.utils import write_json

CLASSNAMES = ["red", "green", "blue"]


def toy_yaml(max_epoch: int, promptkd_style: bool = False) -> str:
    """A method YAML for the toy trainer: SGD, batch 4, best-on-val selection, ``max_epoch`` epochs.

    ``promptkd_style`` adds what PromptKD's configs have: random crop / flip (bicubic) and a constant warm-up
    epoch before a cosine schedule; otherwise the transform is deterministic and the learning rate fixed.
    """
    if promptkd_style:
        inputs = '  INTERPOLATION: "bicubic"\n  TRANSFORMS: ["random_resized_crop", "random_flip", "normalize"]\n'
        schedule = '  LR_SCHEDULER: "cosine"\n  WARMUP_EPOCH: 1\n  WARMUP_TYPE: "constant"\n  WARMUP_CONS_LR: 1e-5\n'
    else:
        inputs, schedule = '  TRANSFORMS: ["normalize"]\n', ""
    return (f"INPUT:\n  SIZE: (8, 8)\n{inputs}"
            "DATALOADER:\n  NUM_WORKERS: 0\n  TRAIN_X:\n    BATCH_SIZE: 4\n  TEST:\n    BATCH_SIZE: 4\n"
            f'OPTIM:\n  NAME: "sgd"\n  LR: 0.05\n  MAX_EPOCH: {max_epoch}\n{schedule}'
            'TRAIN:\n  PRINT_FREQ: 2\nTEST:\n  FINAL_MODEL: "best_val"\n')
COLOURS = [(220, 30, 30), (30, 200, 40), (40, 50, 230)]


def make_image_folder(root: Path, per_class_train: int = 4, per_class_test: int = 2) -> Path:
    """Write ``root/{train,test}/<class>/<i>.png``: noisy 12x10 images of a class colour."""
    rng = np.random.default_rng(0)
    for split, count in (("train", per_class_train), ("test", per_class_test)):
        for cname, colour in zip(CLASSNAMES, COLOURS):
            folder = root / split / cname
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                noise = rng.integers(-25, 25, size=(10, 12, 3))
                pixels = np.clip(np.array(colour) + noise, 0, 255).astype(np.uint8)
                Image.fromarray(pixels).save(folder / f"{i}.png")
    return root


def read_folder(split_dir: str) -> List[Datum]:
    items = []
    for label, cname in enumerate(CLASSNAMES):
        folder = osp.join(split_dir, cname)
        for fname in sorted(os.listdir(folder)):
            items.append(Datum(impath=osp.join(folder, fname), label=label, classname=cname))
    return items


@DATASET_REGISTRY.register(force=True)
class ToyFolder(DatasetBase):
    """Reads ``DATASET.ROOT/{train,test}``; val = test. Records the protocol it was given."""

    last_protocol = "never built"

    def __init__(self, cfg, protocol=None):
        type(self).last_protocol = protocol
        root = cfg.DATASET.ROOT
        train = read_folder(osp.join(root, "train"))
        test = read_folder(osp.join(root, "test"))
        train = self.generate_fewshot_dataset(train, num_shots=cfg.DATASET.NUM_SHOTS)
        super().__init__(train_x=train, val=test, test=test)


@TRAINER_REGISTRY.register(force=True)
class ToyLinearProbe(TrainerX):
    """A linear classifier on raw pixels, trained with SGD + warm-up cosine like the prompt trainers.

    ``stop_after_epoch`` (class attribute) simulates a kill right after that many epochs.
    Like the distillation trainers it keeps a per-epoch evaluation record (``val_by_epoch``, saved and
    restored through the engine's ``run_state`` hooks) and writes ``OUTPUT_DIR/results.json``
    (best val, per-epoch val, final test accuracy) at the end, so resume tests can compare results.
    """

    stop_after_epoch = None

    def build_model(self):
        self.val_by_epoch = {}
        self.final_test = None
        height, width = self.cfg.INPUT.SIZE
        self.model = nn.Sequential(nn.Flatten(), nn.Linear(3 * height * width, self.num_classes))
        self.model.to(self.device)
        self.optim = build_optimizer(self.model, self.cfg.OPTIM)
        self.sched = build_lr_scheduler(self.optim, self.cfg.OPTIM)
        self.register_model("probe", self.model, self.optim, self.sched)

    def forward_backward(self, batch):
        image, label, _ = self.parse_batch_train(batch)
        with self.precision.autocast():
            output = self.model(image)
            loss = F.cross_entropy(output, label)
        self.model_backward_and_update(loss)
        if (self.batch_idx + 1) == self.num_batches:
            self.update_lr()
        return {"loss": loss, "acc": compute_accuracy(output, label)[0].item()}

    def test(self, split=None):
        result = super().test(split)
        if split == "val":
            self.val_by_epoch[self.epoch + 1] = float(result)
        return result

    def run_state(self):
        return {"val_by_epoch": {str(epoch): acc for epoch, acc in self.val_by_epoch.items()}}

    def load_run_state(self, state):
        self.val_by_epoch = {int(epoch): float(acc) for epoch, acc in state["val_by_epoch"].items()}

    def test_final_model(self):
        self.final_test = float(super().test_final_model())
        return self.final_test

    def after_train(self):
        super().after_train()
        if self.final_test is not None:
            write_json({"best_val": float(self.best_result), "final_test": self.final_test,
                        "val_by_epoch": {str(e): a for e, a in sorted(self.val_by_epoch.items())}},
                       osp.join(self.output_dir, RESULTS_FILENAME))

    def save_resume_point(self):
        super().save_resume_point()
        if self.stop_after_epoch is not None and self.epoch + 1 == self.stop_after_epoch:
            raise SimulatedKill(f"killed after epoch {self.epoch + 1}")


class SimulatedKill(RuntimeError):
    """Raised by ToyLinearProbe to simulate a run killed between epochs."""


def toy_cfg(data_root: Path, output_dir: Path, **overrides):
    """A small config for ToyFolder + ToyLinearProbe (8x8 inputs, 3 epochs, best_val)."""
    cfg = get_cfg_default()
    cfg.DATASET.NAME = "ToyFolder"
    cfg.DATASET.ROOT = str(data_root)
    cfg.TRAINER.NAME = "ToyLinearProbe"
    cfg.OUTPUT_DIR = str(output_dir)
    cfg.USE_CUDA = False
    cfg.SEED = 1
    cfg.INPUT.SIZE = (8, 8)
    cfg.INPUT.INTERPOLATION = "bicubic"
    cfg.INPUT.TRANSFORMS = ("random_resized_crop", "random_flip", "normalize")
    cfg.DATALOADER.NUM_WORKERS = 0
    cfg.DATALOADER.TRAIN_X.BATCH_SIZE = 4
    cfg.DATALOADER.TEST.BATCH_SIZE = 4
    cfg.OPTIM.NAME = "sgd"
    cfg.OPTIM.LR = 0.05
    cfg.OPTIM.MAX_EPOCH = 3
    cfg.OPTIM.LR_SCHEDULER = "cosine"
    cfg.OPTIM.WARMUP_EPOCH = 1
    cfg.OPTIM.WARMUP_TYPE = "constant"
    cfg.OPTIM.WARMUP_CONS_LR = 1e-5
    cfg.TRAIN.PRINT_FREQ = 2
    cfg.TEST.FINAL_MODEL = "best_val"
    for key, value in overrides.items():
        node = cfg
        *parents, leaf = key.split(".")
        for parent in parents:
            node = getattr(node, parent)
        setattr(node, leaf, value)
    return cfg


def model_weights(trainer) -> dict:
    """A detached copy of the probe's state dict."""
    return {k: v.detach().clone() for k, v in trainer._models["probe"].state_dict().items()}
