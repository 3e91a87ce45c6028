"""Temporary device check for the distillation trainers (M1); not part of the project."""
import os, sys, time, tempfile, pathlib
sys.path.insert(0, "tests"); sys.path.insert(0, ".")
import torch
import trainers_tiny_setup as tiny
import datasets, trainers  # noqa
from dassl.engine import build_trainer
from dassl.utils import set_random_seed
import trainers.distill as distill

p = pathlib.Path(tempfile.mkdtemp())
world = tiny.make_world(p)
for prec in ["fp16", "bf16", "fp32"]:
    for name in (["PromptKD_RSM", "Simple_RSM"] if prec == "fp16" else ["PromptKD_RSM"]):
        cfg = tiny.make_cfg(world["root"], name, str(p / f"{name}_{prec}"), world["weights"], world["teacher_root"],
                            opts=["USE_CUDA", True, "TRAINER.PROMPTKD.PREC", prec, "OPTIM.MAX_EPOCH", 2])
        set_random_seed(1)
        tr = build_trainer(cfg)
        tr.train()
        print("TEACHER_DTYPE", tr.teacher.model.image_encoder.conv1.weight.dtype, "STUDENT", tr.student.image_encoder.VPT.dtype if hasattr(tr.student.image_encoder, "VPT") else None)
        print("RESULT", prec, name, open(p / f"{name}_{prec}" / "results.json").read().replace("\n", " "))
# WEIGHT 0 equality on CUDA fp16
losses = {}
for name, opts in [("PromptKD", []), ("PromptKD_RSM", ["TRAINER.RSM.WEIGHT", 0.0])]:
    cfg = tiny.make_cfg(world["root"], name, str(p / f"eq_{name}"), world["weights"], world["teacher_root"],
                        opts=["USE_CUDA", True, "TRAINER.PROMPTKD.PREC", "fp16"] + opts)
    set_random_seed(1)
    tr = build_trainer(cfg)
    rec = []
    step = tr.forward_backward
    tr.forward_backward = lambda b: rec.append(step(b)["loss"]) or {"loss": rec[-1]}
    tr.train()
    losses[name] = rec
print("EQUAL_CUDA_FP16", losses["PromptKD"] == losses["PromptKD_RSM"], losses)

