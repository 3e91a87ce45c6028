"""Helpers for the supervised prompt-learner tests: one-epoch runs of train.py on the fake OxfordPets
(5 classes: base = the first 3, new = the last 2) with tiny CLIP weights, and evaluation-only runs."""
from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Optional, Sequence

import torch

import train
from tests.trainers_tiny_setup import make_world

# A published config per trainer (the tiny runs override sizes, epochs and batch sizes).
CONFIGS = {
    "CoOp": "CoOp/vit_b16_ctxv1.yaml",
    "CoCoOp": "CoCoOp/vit_b16_c4_ep10_batch1_ctxv1.yaml",
    "IVLP": "IVLP/vit_b16_c2_ep20_batch4_4+4ctx.yaml",
    "MaPLe": "MaPLe/vit_b16_c2_ep5_batch4_2ctx.yaml",
    "PromptSRC": "PromptSRC/vit_b16_c2_ep20_batch4_4+4ctx.yaml",
}
SMALL = {  # prompt depths that fit the 2-layer tiny CLIP
    "IVLP": ["TRAINER.IVLP.PROMPT_DEPTH_VISION", "2", "TRAINER.IVLP.PROMPT_DEPTH_TEXT", "2"],
    "MaPLe": ["TRAINER.MAPLE.PROMPT_DEPTH", "2"],
    "PromptSRC": ["TRAINER.PROMPTSRC.PROMPT_DEPTH_VISION", "2", "TRAINER.PROMPTSRC.PROMPT_DEPTH_TEXT", "2",
                  "TRAINER.PROMPTSRC.GPA_MEAN", "1"],
}


def tiny_world(root: Path) -> dict:
    """Fake dataset and tiny CLIP weights under ``root``."""
    return make_world(root, make_teacher=False)


def run(world: dict, trainer: str, output_dir: Path, opts: Sequence[str] = (), model_dir: Optional[Path] = None,
        load_epoch: Optional[int] = None, subsample: str = "base"):
    """train.py in-process: a one-epoch training run, or with ``model_dir`` an evaluation-only run."""
    argv = ["--root", world["root"], "--seed", "1", "--trainer", trainer,
            "--dataset-config-file", "configs/datasets/oxford_pets.yaml",
            "--config-file", os.path.join("configs", "trainers", CONFIGS[trainer]), "--output-dir", str(output_dir)]
    if model_dir is not None:
        argv += ["--eval-only", "--model-dir", str(model_dir)]
        if load_epoch is not None:
            argv += ["--load-epoch", str(load_epoch)]
    argv += ["DATASET.NUM_SHOTS", "2", "DATASET.SUBSAMPLE_CLASSES", subsample,
             "MODEL.BACKBONE.WEIGHTS", world["weights"][0], "INPUT.SIZE", "(32, 32)",
             "OPTIM.MAX_EPOCH", "1", "OPTIM.WARMUP_EPOCH", "-1", "OPTIM.LR", "0.01", "DATALOADER.NUM_WORKERS", "0",
             "DATALOADER.TRAIN_X.BATCH_SIZE", "2", "DATALOADER.TEST.BATCH_SIZE", "8", "USE_CUDA", "False"]
    argv += SMALL.get(trainer, []) + list(opts)
    return train.main(train.build_parser().parse_args(argv))


@contextlib.contextmanager
def restored_after(trainer):
    """Run a training step in a test without changing the trainer for the other tests."""
    state = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    optim_state = trainer.optim.state_dict()
    try:
        yield trainer
    finally:
        trainer.model.load_state_dict(state)
        trainer.optim.load_state_dict(optim_state)


def train_step(trainer, image: torch.Tensor, label: torch.Tensor) -> dict:
    """One ``forward_backward`` on a fixed batch (not the epoch's last batch: no scheduler step)."""
    trainer.set_model_mode("train")
    trainer.batch_idx, trainer.num_batches = 0, 2
    return trainer.forward_backward({"img": image, "label": label})


def read_json(path: Path) -> dict:
    return json.loads(Path(path).read_text())


def saved_state(output_dir: Path, folder: str, epoch: int = 1) -> dict:
    """The state dict of ``<output_dir>/<folder>/model.pth.tar-<epoch>``."""
    checkpoint = torch.load(Path(output_dir, folder, f"model.pth.tar-{epoch}"), map_location="cpu", weights_only=False)
    return checkpoint["state_dict"]


@torch.no_grad()
def new_class_logits(trained, evaluated) -> tuple:
    """Logits of the new classes' test images: from the trained model with its class part rebuilt in the same
    run, and from the evaluation-only run's model. Both in eval mode."""
    loader, _, new_names = trained.new_class_data("test")
    images = torch.cat([batch["img"] for batch in loader])
    trained.set_model_mode("eval")
    trained.model.set_classnames(new_names)
    try:
        in_run = trained.model.logits(images, trained.model.class_features())
    finally:
        trained.model.set_classnames(trained.classnames)
    evaluated.set_model_mode("eval")
    assert list(evaluated.classnames) == list(new_names)
    return in_run, evaluated.model.logits(images, evaluated.model.class_features())


def check_base2new_results(output_dir: Path, trainer: str) -> dict:
    """results.json of a tiny base-to-new run: its fields and consistent entries; returns it."""
    record = read_json(Path(output_dir, "results.json"))
    assert record["trainer"] == trainer and record["dataset"] == "OxfordPets"
    assert record["protocol"] == "base2new" and record["subsample"] == "base" and record["split"] == "test"
    assert record["seed"] == 1 and record["shots"] == 2 and len(record["config_hash"]) == 12
    assert record["best"] == record["last"]  # the published configs keep the last epoch
    entry = record["last"]
    assert entry["epoch"] == 1 and set(entry) == {"epoch", "base", "new", "hm"}
    base, new = entry["base"], entry["new"]
    assert 0 <= base <= 100 and 0 <= new <= 100
    assert abs(entry["hm"] - (0 if base + new == 0 else 2 * base * new / (base + new))) < 1e-3
    return record
