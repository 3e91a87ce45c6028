"""Helpers for the trainer tests: tiny CLIP weights, a tiny PromptSRC-layout teacher checkpoint, a
fake dataset and a ready config. Everything is written under a caller-provided folder (tmp_path)."""
from __future__ import annotations

import os

import torch

import clip
from clip.random_weights import preset_state_dict
from trainers.promptsrc_model import PromptedCLIP, ivlp_design_details

STUDENT_PRESET = "tiny"  # 2 layers, embed 32, 32 px
TEACHER_PRESET = "tiny-large"  # 3 layers, embed 48, 32 px
TEACHER_DESIGN = {"n_ctx_vision": 2, "n_ctx_text": 4, "depth_vision": 3, "depth_text": 3}
DATASET = "OxfordPets"
NUM_CLASSES = 5  # base = first 3, new = last 2


def write_clip_weights(folder: str) -> tuple:
    """Tiny student and teacher CLIP weights files (plain state dicts); returns their paths."""
    os.makedirs(folder, exist_ok=True)
    student = os.path.join(folder, "tiny-student.pt")
    teacher = os.path.join(folder, "tiny-teacher.pt")
    torch.save(preset_state_dict(STUDENT_PRESET, seed=1), student)
    torch.save(preset_state_dict(TEACHER_PRESET, seed=2), teacher)
    return student, teacher


def teacher_state_dict(teacher_weights: str, classnames, seed: int = 3) -> dict:
    """A PromptSRC-layout state dict: prompted CLIP keys, token buffers and a zero-shot tower copy."""
    torch.manual_seed(seed)
    d = TEACHER_DESIGN
    design = ivlp_design_details(d["n_ctx_vision"], d["n_ctx_text"], d["depth_vision"], d["depth_text"])
    model = PromptedCLIP(classnames, clip.build_model(clip.load_state_dict(teacher_weights), design),
                         n_ctx_text=d["n_ctx_text"], verbose=False)
    with torch.no_grad():
        model.prompt_learner.ctx.add_(torch.randn_like(model.prompt_learner.ctx))
    state = dict(model.state_dict())
    for key, value in model.image_encoder.state_dict().items():
        if "VPT" not in key:
            state[f"prompt_learner.ZS_image_encoder.{key}"] = value.clone()
    return state


def write_teacher_checkpoint(path: str, state_dict: dict) -> str:
    """Save ``state_dict`` in the engine's checkpoint wrapper (as PromptSRC does)."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    torch.save({"state_dict": state_dict, "epoch": 20, "optimizer": None, "scheduler": None,
                "val_result": None}, path)
    return path


def make_cfg(root: str, trainer: str, output_dir: str, weights: tuple, teacher_root: str,
             seed: int = 1, opts=None):
    """A frozen config for a 1-epoch tiny run on the fake dataset."""
    from dassl.config import get_cfg_default
    from trainers.config import extend_cfg

    cfg = extend_cfg(get_cfg_default())
    cfg.merge_from_file(os.path.join("configs", "trainers", "PromptKD", "vit_b16_c2_ep20_batch8_4+4ctx.yaml"))
    cfg.merge_from_list([
        "DATASET.NAME", DATASET, "DATASET.ROOT", root, "DATASET.NUM_SHOTS", 0,
        "TRAINER.NAME", trainer, "TRAINER.MODAL", "base2novel", "OUTPUT_DIR", output_dir, "SEED", seed,
        "INPUT.SIZE", (32, 32), "DATALOADER.NUM_WORKERS", 0, "DATALOADER.TRAIN_X.BATCH_SIZE", 4,
        "DATALOADER.TEST.BATCH_SIZE", 8, "OPTIM.MAX_EPOCH", 1, "OPTIM.LR", 0.05, "OPTIM.WARMUP_EPOCH", -1,
        "TRAIN.PRINT_FREQ", 1, "USE_CUDA", False,
        "MODEL.BACKBONE.WEIGHTS", weights[0], "TRAINER.PROMPTKD.TEACHER_WEIGHTS", weights[1],
        "TRAINER.PROMPTKD.TEACHER_ROOT", teacher_root, "TRAINER.PROMPTKD.PROMPT_DEPTH_VISION", 2,
        "TRAINER.PROMPTKD.KD_WEIGHT", 10.0, "TRAINER.RSM.DIM", 8,
    ] + list(opts or []))
    cfg.freeze()
    return cfg


def make_world(tmp_path, make_teacher: bool = True) -> dict:
    """Fake dataset + tiny weights + a teacher checkpoint in PromptKD's folder layout."""
    from tools.make_fake_dataset import make_fake_dataset

    data_root = str(tmp_path / "data")
    make_fake_dataset(DATASET, data_root, num_classes=NUM_CLASSES, train_per_class=2, test_per_class=1,
                      image_size=16)
    weights = write_clip_weights(str(tmp_path / "weights"))
    teacher_root = str(tmp_path / "teacher_model")
    world = {"root": data_root, "weights": weights, "teacher_root": teacher_root}
    if make_teacher:
        classnames = dataset_classnames(data_root)
        ckpt = os.path.join(teacher_root, DATASET, "VLPromptLearner", "model-best.pth.tar")
        write_teacher_checkpoint(ckpt, teacher_state_dict(weights[1], classnames))
        world["teacher_ckpt"] = ckpt
    return world


def dataset_classnames(root: str) -> list:
    """Class names of the fake dataset in label order (read through the registered reader)."""
    from dassl.config import get_cfg_default
    from dassl.data.datasets import build_dataset
    from trainers.config import extend_cfg

    import datasets  # noqa: F401  (registers the readers)

    cfg = extend_cfg(get_cfg_default())
    cfg.merge_from_list(["DATASET.NAME", DATASET, "DATASET.ROOT", root, "DATASET.NUM_SHOTS", 0])
    return list(build_dataset(cfg, protocol="base2novel").classnames)
