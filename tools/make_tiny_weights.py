#!/usr/bin/env python
"""Write tiny random CLIP weights for a student and a teacher, plus a teacher checkpoint in
PromptKD's format, so that the distillation trainers run end to end without any download.

Output (``out_dir``):
- ``student.pt``: OpenAI-layout CLIP state dict (preset ``tiny`` by default: 32 px images, width 64);
- ``teacher.pt``: OpenAI-layout CLIP state dict (preset ``tiny-large``: wider, like ViT-L/14 vs B/16);
- ``teacher_model/<DATASET.NAME>/VLPromptLearner/model-best.pth.tar``: a Dassl checkpoint dict
  (``state_dict, epoch, optimizer, scheduler, val_result``) whose ``state_dict`` has the keys of a
  PromptSRC-trained teacher as PromptKD releases them: ``prompt_learner.ctx`` and token buffers, ``image_encoder.*`` with ``VPT`` /
  ``VPT_shallow``, ``text_encoder.*``, ``logit_scale`` and the frozen zero-shot tower under
  ``prompt_learner.ZS_image_encoder.*``. With ``cross=True`` it goes to
  ``teacher_model/ImageNet-xd/VLPromptLearner_large/model.pth.tar-20`` instead.

The numbers these weights produce mean nothing: they exist for smoke runs and tests.
Usage: ``python tools/make_tiny_weights.py OUT_DIR --dataset OxfordPets --classnames a b c``.
"""
from __future__ import annotations

import argparse
import copy
import os
import sys
from pathlib import Path
from typing import Dict, Optional, Sequence

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

import clip  # noqa: E402
from clip.random_weights import PRESETS, preset_state_dict  # noqa: E402
from trainers.promptsrc_model import PromptedCLIP, ivlp_design_details  # noqa: E402

STUDENT_FILE = "student.pt"
TEACHER_FILE = "teacher.pt"
BASE2NOVEL_TEACHER = Path("VLPromptLearner") / "model-best.pth.tar"
CROSS_TEACHER = Path("ImageNet-xd") / "VLPromptLearner_large" / "model.pth.tar-20"


def write_clip_weights(path: str | Path, preset: str, seed: int = 0) -> Path:
    """Save a random OpenAI-layout CLIP state dict for ``preset`` (float32, plain ``torch.save``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(preset_state_dict(preset, seed=seed), path)
    return path


def teacher_state_dict(clip_state: Dict[str, torch.Tensor], classnames: Sequence[str], n_ctx: int = 4,
                       depth: Optional[int] = None, seed: int = 0) -> Dict[str, torch.Tensor]:
    """A PromptSRC-layout teacher state dict built on ``clip_state`` (random prompts, real key names).

    ``depth`` (prompt depth of both towers) defaults to 9, capped at the towers' layer count so that
    every ``VPT_shallow`` block exists in the tiny model.
    """
    layers = min(
        1 + max(int(k.split(".")[3]) for k in clip_state if k.startswith("visual.transformer.resblocks.")),
        1 + max(int(k.split(".")[2]) for k in clip_state if k.startswith("transformer.resblocks.")),
    )
    depth = min(9, layers) if depth is None else depth
    torch.manual_seed(seed)
    clip_model = clip.build_model(clip_state, ivlp_design_details(n_ctx, n_ctx, depth, depth))
    model = PromptedCLIP(classnames, clip_model, n_ctx_text=n_ctx, n_ctx_vision=n_ctx, verbose=False)
    # PromptSRC stores a frozen zero-shot copy of the vision tower inside its prompt learner.
    model.prompt_learner.ZS_image_encoder = copy.deepcopy(clip.build_model(clip_state).visual)
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def checkpoint_dict(state_dict: Dict[str, torch.Tensor], epoch: int = 20) -> dict:
    """The engine's checkpoint wrapper around a model state dict."""
    return {"state_dict": state_dict, "epoch": epoch, "optimizer": None, "scheduler": None,
            "val_result": None}


def make_tiny_weights(out_dir: str | Path, dataset_name: str, classnames: Sequence[str],
                      student_preset: str = "tiny", teacher_preset: str = "tiny-large",
                      cross: bool = False, seed: int = 0) -> Dict[str, Path]:
    """Write student / teacher CLIP weights and the teacher checkpoint; returns their paths.

    Keys of the result: ``student``, ``teacher``, ``teacher_root`` (the folder to pass as
    ``TRAINER.PROMPTKD.TEACHER_ROOT``) and ``teacher_ckpt``.
    """
    if not classnames:
        raise ValueError("make_tiny_weights needs at least one class name")
    for preset in (student_preset, teacher_preset):
        if preset not in PRESETS:
            raise ValueError(f"unknown CLIP preset {preset!r}; available: {sorted(PRESETS)}")
    out = Path(out_dir)
    student = write_clip_weights(out / STUDENT_FILE, student_preset, seed=seed)
    teacher = write_clip_weights(out / TEACHER_FILE, teacher_preset, seed=seed + 1)
    root = out / "teacher_model"
    ckpt = root / CROSS_TEACHER if cross else root / dataset_name / BASE2NOVEL_TEACHER
    ckpt.parent.mkdir(parents=True, exist_ok=True)
    state = teacher_state_dict(preset_state_dict(teacher_preset, seed=seed + 1), classnames, seed=seed)
    torch.save(checkpoint_dict(state), ckpt)
    return {"student": student, "teacher": teacher, "teacher_root": root, "teacher_ckpt": ckpt}


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description="Tiny random CLIP weights and a PromptKD-format teacher.")
    parser.add_argument("out_dir", help="folder to write student.pt, teacher.pt and teacher_model/ into")
    parser.add_argument("--dataset", required=True, help="DATASET.NAME of the teacher folder, e.g. OxfordPets")
    parser.add_argument("--classnames", nargs="+", required=True, help="class names in label order")
    parser.add_argument("--student-preset", default="tiny", choices=sorted(PRESETS))
    parser.add_argument("--teacher-preset", default="tiny-large", choices=sorted(PRESETS))
    parser.add_argument("--cross", action="store_true", help="write the ImageNet-xd cross-dataset teacher")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    paths = make_tiny_weights(args.out_dir, args.dataset, args.classnames, args.student_preset,
                              args.teacher_preset, cross=args.cross, seed=args.seed)
    for name, path in paths.items():
        print(f"{name}: {os.fspath(path)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
