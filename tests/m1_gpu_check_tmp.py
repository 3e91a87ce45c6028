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
for prec in ["fp16", "bf16", "fp32", "amp"]:
    for name in ["PromptKD_RSM", "Simple_RSM"]:
        cfg = tiny.make_cfg(world["root"], name, str(p / f"{name}_{prec}"), world["weights"], world["teacher_root"],
                            opts=["USE_CUDA", True, "TRAINER.PROMPTKD.PREC", prec, "OPTIM.MAX_EPOCH", 2])
        set_random_seed(1)
        tr = build_trainer(cfg)
        tr.train()
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

# real-size step timing with random weights
from clip.random_weights import preset_state_dict
from trainers.promptkd import DistillStudent
from trainers.rsm import RSM, make_generator
from trainers.losses import kd_loss
import clip
from trainers.promptsrc_model import ivlp_design_details, PromptedCLIP
import torch.nn.functional as F
dev = "cuda"
teacher = PromptedCLIP([f"class {i}" for i in range(100)], clip.build_model(preset_state_dict("ViT-L/14"), ivlp_design_details(4, 4, 9, 9)), verbose=False).to(dev).eval()
t0 = time.time()
with torch.no_grad():
    tf = F.normalize(teacher.encode_text(chunk_size=256).float(), dim=-1)
torch.cuda.synchronize(); print("text features 100 classes (fp32)", time.time() - t0)
teacher.image_encoder.half()
student = DistillStudent(clip.build_model(preset_state_dict("ViT-B/16"), ivlp_design_details(4, 4, 9, 0)), 768).to(dev)
for n, q in student.named_parameters():
    q.requires_grad_("VPT" in n)
rsm = RSM(768, 768, 64, generator=make_generator(1)).to(dev)
opt = torch.optim.SGD([q for q in list(student.parameters()) + list(rsm.parameters()) if q.requires_grad], lr=0.005, momentum=0.9)
scaler = torch.amp.GradScaler("cuda")
x = torch.randn(8, 3, 224, 224, device=dev)
for use_rsm in [False, True, False, True]:
    for i in range(25):
        if i == 5:
            torch.cuda.synchronize(); t0 = time.time()
        with torch.autocast("cuda", dtype=torch.float16):
            with torch.no_grad():
                zt = 100 * F.normalize(teacher.encode_image(x), dim=-1) @ tf.half().t()
            _, proj = student.encode(x)
            fs = F.normalize(proj, dim=-1)
            zs = student.logit_scale.exp() * fs @ tf.to(fs.dtype).t()
        loss = 1000 * kd_loss(zs, zt)
        if use_rsm:
            with torch.autocast("cuda", dtype=torch.float16):
                loss = loss + 50 * rsm(proj, tf)
        opt.zero_grad(); scaler.scale(loss).backward(); scaler.step(opt); scaler.update()
    torch.cuda.synchronize()
    print("step ms", "rsm" if use_rsm else "pkd", (time.time() - t0) / 20 * 1000, "peak GB", torch.cuda.max_memory_allocated() / 1e9)
