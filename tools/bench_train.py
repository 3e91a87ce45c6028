#!/usr/bin/env python
"""Training-step benchmark of the distillation trainers (a tool, not a test).

Measures, for PromptKD, PromptKD_RSM and Simple_RSM built exactly as ``train.py`` builds them (random
weights, a throw-away fake dataset with ``--classes`` classes, synthetic batches):
- images/s of ``forward_backward`` and peak memory (CUDA: max allocated; CPU: process max RSS);
- the teacher text-feature caching gain: PromptKD's step with the cached class vectors versus the
  same step plus a full teacher text-encoder pass over all classes (what the original PromptKD code
  does at every step: PromptKD quirk 1 in docs/compatibility.md);
- the cost split of a cached step: teacher image forward alone, and the step without the teacher;
- the RSM overhead: PromptKD_RSM step time over PromptKD's, in %.

Default sizes are the real ones (ViT-B/16 student, ViT-L/14 teacher, 224 px, batch 8); ``--small``
uses CPU-sized towers. Random weights are produced in memory: ``clip.load_state_dict`` and the teacher
checkpoint reader are redirected for the names ``bench-student`` / ``bench-teacher`` only.

    python tools/bench_train.py --device cuda
    python tools/bench_train.py --device cpu --small --steps 5

``--ddp N`` measures data-parallel training instead (README, "Multi-GPU and large runs"): PromptKD's
step (forward, backward, gradient all-reduce, optimiser step) in N processes, each with batch / N
images, against one process with the whole batch, all started from this one with torchrun's
environment (gloo on the CPU, NCCL with one GPU per process on CUDA). On the CPU the cores are
shared: one process gets every thread, each of N processes 1/N of them.

    python tools/bench_train.py --device cpu --small --ddp 2 --batch 8 --steps 5
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Dict, Optional

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

import clip  # noqa: E402
from clip.random_weights import PRESETS, random_state_dict  # noqa: E402

SMALL = {
    "student": dict(image_resolution=64, vision_layers=4, vision_width=128, vision_patch_size=8,
                    embed_dim=64, context_length=77, text_width=128, text_layers=4),
    "teacher": dict(image_resolution=64, vision_layers=6, vision_width=192, vision_patch_size=8,
                    embed_dim=96, context_length=77, text_width=192, text_layers=6),
}
REAL = {"student": PRESETS["ViT-B/16"], "teacher": PRESETS["ViT-L/14"]}
TRAINERS = ("PromptKD", "PromptKD_RSM", "Simple_RSM")


def install_random_weights(sizes: Dict[str, dict], classnames) -> Dict[str, dict]:
    """Serve random state dicts for ``bench-student`` / ``bench-teacher`` and a matching teacher
    checkpoint, without writing gigabytes of weights to disk."""
    import trainers.teacher as teacher_mod
    from tools.make_tiny_weights import teacher_state_dict

    states = {f"bench-{k}": random_state_dict(**v, seed=i) for i, (k, v) in enumerate(sizes.items())}
    teacher_ckpt = teacher_state_dict(states["bench-teacher"], classnames)
    teacher_ckpt = {k: v for k, v in teacher_ckpt.items() if "ZS_image_encoder" not in k}
    original = clip.load_state_dict

    def load_state_dict(name_or_path, **kwargs):
        if str(name_or_path) in states:
            return dict(states[str(name_or_path)])
        return original(name_or_path, **kwargs)

    clip.load_state_dict = load_state_dict
    teacher_mod.read_teacher_state_dict = lambda path: dict(teacher_ckpt)
    return states


def build_trainer(name: str, root: str, work: str, sizes: Dict[str, dict], device: str, prec: str,
                  batch: int):
    from dassl.config import get_cfg_default
    from dassl.engine import build_trainer as dassl_build
    from trainers.config import extend_cfg

    import datasets  # noqa: F401
    import trainers  # noqa: F401

    cfg = extend_cfg(get_cfg_default())
    cfg.merge_from_file(os.path.join("configs", "trainers", name, "vit_b16_c2_ep20_batch8_4+4ctx.yaml"))
    res = sizes["student"]["image_resolution"]
    depth = min(9, sizes["student"]["vision_layers"])
    cfg.merge_from_list([
        "DATASET.NAME", "Caltech101", "DATASET.ROOT", root, "DATASET.NUM_SHOTS", 0,
        "TRAINER.NAME", name, "TRAINER.MODAL", "base2novel", "OUTPUT_DIR", os.path.join(work, name),
        "INPUT.SIZE", (res, res), "DATALOADER.NUM_WORKERS", 0, "DATALOADER.TRAIN_X.BATCH_SIZE", batch,
        "USE_CUDA", device == "cuda", "MODEL.BACKBONE.WEIGHTS", "bench-student",
        "TRAINER.PROMPTKD.TEACHER_WEIGHTS", "bench-teacher", "TRAINER.PROMPTKD.TEACHER_ROOT",
        os.path.join(work, "teacher_model"), "TRAINER.PROMPTKD.PREC", prec,
        "TRAINER.PROMPTKD.PROMPT_DEPTH_VISION", depth, "TRAINER.PROMPTKD.PROMPT_DEPTH_TEXT", depth,
        "TRAINER.PROMPTKD.KD_WEIGHT", 1000.0,
    ])
    cfg.freeze()
    trainer = dassl_build(cfg)
    trainer.set_model_mode("train")
    trainer.batch_idx, trainer.num_batches, trainer.epoch = 0, 10 ** 9, 0  # never step the LR here
    return trainer


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def time_it(fn: Callable[[], object], steps: int, warmup: int, device: str) -> float:
    """Seconds per call of ``fn`` (median of ``steps`` calls after ``warmup`` calls)."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(steps):
        _sync(device)
        start = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - start)
    times.sort()
    return times[len(times) // 2]


def peak_memory_mb(device: str) -> float:
    if device == "cuda":
        return torch.cuda.max_memory_allocated() / 2 ** 20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def bench_one(trainer, device: str, batch: int, steps: int, warmup: int, extra: bool) -> Dict[str, float]:
    res = trainer.cfg.INPUT.SIZE[0]
    image = torch.randn(batch, 3, res, res, device=device)
    data = {"img": image, "label": torch.zeros(batch, dtype=torch.long, device=device)}
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    step = time_it(lambda: trainer.forward_backward(data), steps, warmup, device)
    out = {"step_s": step, "images_per_s": batch / step, "peak_mem_mb": peak_memory_mb(device)}
    if not extra:
        return out
    teacher = trainer.teacher

    def uncached():
        with torch.no_grad(), trainer.precision.autocast():
            teacher.model.encode_text()  # what the original recomputes every step
        trainer.forward_backward(data)

    out["step_uncached_s"] = time_it(uncached, steps, warmup, device)
    out["caching_speedup"] = out["step_uncached_s"] / step

    def teacher_image():
        with trainer.precision.autocast():
            teacher.logits(image)

    out["teacher_image_fwd_s"] = time_it(teacher_image, steps, warmup, device)
    with trainer.precision.autocast():
        fixed_logits = teacher.logits(image)
    real_logits = teacher.logits
    teacher.logits = lambda img: fixed_logits
    try:
        out["step_without_teacher_s"] = time_it(lambda: trainer.forward_backward(data), steps, warmup, device)
    finally:
        teacher.logits = real_logits
    out["step_over_parts"] = step / (out["teacher_image_fwd_s"] + out["step_without_teacher_s"])
    return out


def run(device: str = "cuda", small: bool = False, classes: int = 100, batch: int = 8, steps: int = 10,
        warmup: int = 3, prec: Optional[str] = None) -> Dict[str, Dict[str, float]]:
    """Benchmark every trainer; returns trainer -> measurements (and an ``rsm_overhead_pct`` entry)."""
    from tools.make_fake_dataset import make_fake_dataset

    if device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("error: --device cuda but no CUDA device is available (use --device cpu --small)")
    sizes = SMALL if small else REAL
    prec = prec or ("fp16" if device == "cuda" else "fp32")
    results: Dict[str, Dict[str, float]] = {}
    with tempfile.TemporaryDirectory(prefix="bench_train_") as work:
        root = os.path.join(work, "data")
        make_fake_dataset("Caltech101", root, num_classes=classes, train_per_class=1, val_per_class=1,
                          test_per_class=1, image_size=16)
        ckpt = Path(work, "teacher_model", "Caltech101", "VLPromptLearner", "model-best.pth.tar")
        ckpt.parent.mkdir(parents=True)
        ckpt.write_bytes(b"")  # placeholder: the state dict is served from memory
        classnames = [f"class {i}" for i in range(classes)]
        install_random_weights(sizes, classnames)
        for name in TRAINERS:
            trainer = build_trainer(name, root, work, sizes, device, prec, batch)
            results[name] = bench_one(trainer, device, batch, steps, warmup, extra=(name == "PromptKD"))
            del trainer
            if device == "cuda":
                torch.cuda.empty_cache()
    base, rsm = results["PromptKD"]["step_s"], results["PromptKD_RSM"]["step_s"]
    results["summary"] = {"rsm_overhead_pct": 100.0 * (rsm - base) / base,
                          "caching_speedup": results["PromptKD"]["caching_speedup"]}
    return results


def format_report(results: Dict[str, Dict[str, float]], device: str, small: bool, classes: int, batch: int) -> str:
    dev = torch.cuda.get_device_name(0) if device == "cuda" else "CPU"
    sizes = "small CPU-sized towers" if small else "ViT-B/16 student, ViT-L/14 teacher"
    lines = [f"Device: {dev}; {sizes}; batch {batch}; {classes} classes", "",
             "| trainer | step (ms) | images/s | peak memory (MiB) |", "|---|---|---|---|"]
    for name in TRAINERS:
        r = results[name]
        lines.append(f"| {name} | {1000 * r['step_s']:.1f} | {r['images_per_s']:.1f} | {r['peak_mem_mb']:.0f} |")
    p = results["PromptKD"]
    lines += ["",
              f"PromptKD step with text features recomputed every step (original): {1000 * p['step_uncached_s']:.1f} ms "
              f"-> caching speed-up x{p['caching_speedup']:.2f}",
              f"Cached step = {1000 * p['step_s']:.1f} ms vs teacher image forward {1000 * p['teacher_image_fwd_s']:.1f} ms "
              f"+ student forward/backward {1000 * p['step_without_teacher_s']:.1f} ms (ratio {p['step_over_parts']:.2f})",
              f"RSM overhead (PromptKD_RSM vs PromptKD step time): {results['summary']['rsm_overhead_pct']:+.1f}%"]
    return "\n".join(lines)


def _ddp_worker(rank: int, nproc: int, port: int, threads: int, spec: Dict[str, object], results) -> None:
    """One process of `run_ddp`: join the group (if several), build PromptKD, time its step on batch / nproc images."""
    try:
        if nproc > 1:
            os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(nproc),
                              MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
        torch.set_num_threads(threads)
        from dassl.engine.distributed import init_distributed, shutdown_distributed

        device, batch = str(spec["device"]), int(spec["batch"])
        init_distributed(device == "cuda")
        sizes = SMALL if spec["small"] else REAL
        install_random_weights(sizes, [f"class {i}" for i in range(int(spec["classes"]))])
        trainer = build_trainer("PromptKD", str(spec["root"]), str(spec["work"]), sizes, device, str(spec["prec"]),
                                batch)
        local = batch // nproc
        res = trainer.cfg.INPUT.SIZE[0]
        generator = torch.Generator().manual_seed(rank)
        data = {"img": torch.randn(local, 3, res, res, generator=generator).to(trainer.device),
                "label": torch.zeros(local, dtype=torch.long, device=trainer.device)}
        step = time_it(lambda: trainer.forward_backward(data), int(spec["steps"]), int(spec["warmup"]), device)
        shutdown_distributed()
        results.put((rank, step, None))
    except BaseException as exc:  # noqa: BLE001  (reported by the parent)
        results.put((rank, None, f"{type(exc).__name__}: {exc}"))


def _time_processes(nproc: int, threads: int, spec: Dict[str, object]) -> float:
    """Median step time (s) of rank 0 in a group of `nproc` fresh processes (each step ends in the
    gradient all-reduce, so the ranks advance together). Started with "spawn": a process forked after
    this one ran multi-threaded OpenMP code could hang in its first parallel region."""
    import multiprocessing
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    context = multiprocessing.get_context("spawn")
    results = context.Queue()
    workers = [context.Process(target=_ddp_worker, args=(rank, nproc, port, threads, spec, results))
               for rank in range(nproc)]
    for worker in workers:
        worker.start()
    outcome = dict((rank, (step, error)) for rank, step, error in (results.get() for _ in workers))
    for worker in workers:
        worker.join()
    errors = [f"rank {rank}: {error}" for rank, (_, error) in sorted(outcome.items()) if error]
    if errors:
        raise SystemExit("error: " + "; ".join(errors))
    return outcome[0][0]


def run_ddp(nproc: int, device: str = "cpu", small: bool = True, classes: int = 100, batch: int = 8,
            steps: int = 10, warmup: int = 3, prec: Optional[str] = None) -> Dict[str, float]:
    """PromptKD's step in `nproc` processes (batch / nproc images each) against one process (`batch` images)."""
    from tools.make_fake_dataset import make_fake_dataset

    if nproc < 2:
        raise SystemExit("error: --ddp needs at least 2 processes")
    if batch % nproc:
        raise SystemExit(f"error: --batch {batch} (the global batch) must divide by --ddp {nproc}")
    if device == "cuda" and torch.cuda.device_count() < nproc:
        raise SystemExit(f"error: --ddp {nproc} on cuda needs {nproc} GPUs, {torch.cuda.device_count()} visible")
    prec = prec or ("fp16" if device == "cuda" else "fp32")
    cores = torch.get_num_threads()
    with tempfile.TemporaryDirectory(prefix="bench_ddp_") as work:
        root = os.path.join(work, "data")
        make_fake_dataset("Caltech101", root, num_classes=classes, train_per_class=1, val_per_class=1,
                          test_per_class=1, image_size=16)
        ckpt = Path(work, "teacher_model", "Caltech101", "VLPromptLearner", "model-best.pth.tar")
        ckpt.parent.mkdir(parents=True)
        ckpt.write_bytes(b"")  # placeholder: the state dict is served from memory
        spec = {"root": root, "work": work, "small": small, "classes": classes, "device": device, "prec": prec,
                "batch": batch, "steps": steps, "warmup": warmup}
        one = _time_processes(1, cores, spec)
        many = _time_processes(nproc, max(1, cores // nproc), spec)
    return {"processes": nproc, "global_batch": batch, "threads": cores, "step_1_s": one, "step_n_s": many,
            "speedup": one / many, "efficiency": one / many / nproc}


def format_ddp_report(r: Dict[str, float], device: str, small: bool) -> str:
    sizes = "small CPU-sized towers" if small else "ViT-B/16 student, ViT-L/14 teacher"
    backend = "NCCL, one GPU per process" if device == "cuda" else f"gloo, {r['threads']} CPU threads shared"
    n, batch = r["processes"], r["global_batch"]
    return "\n".join([
        f"PromptKD training step, global batch {batch}; {sizes}; {backend}", "",
        "| processes | images per process | step (ms) | images/s |", "|---|---|---|---|",
        f"| 1 | {batch} | {1000 * r['step_1_s']:.1f} | {batch / r['step_1_s']:.1f} |",
        f"| {n} | {batch // n} | {1000 * r['step_n_s']:.1f} | {batch / r['step_n_s']:.1f} |", "",
        f"Speed-up of {n} processes: x{r['speedup']:.2f} (parallel efficiency {100 * r['efficiency']:.0f}%)"])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="Training-step throughput and memory of the distillation trainers.")
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--small", action="store_true", help="CPU-sized towers instead of ViT-B/16 + ViT-L/14")
    parser.add_argument("--classes", type=int, default=100, help="number of classes (teacher text features)")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=10, help="timed steps per measurement (median)")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--prec", choices=("fp16", "bf16", "fp32"), default=None,
                        help="default: fp16 on cuda, fp32 on cpu")
    parser.add_argument("--json", metavar="FILE", help="also write the raw numbers as JSON")
    parser.add_argument("--ddp", type=int, metavar="N", default=0,
                        help="instead: PromptKD's step in N processes (batch / N images each) against one process")
    args = parser.parse_args(argv)
    if args.ddp:
        ddp = run_ddp(args.ddp, args.device, args.small, args.classes, args.batch, args.steps, args.warmup, args.prec)
        print(format_ddp_report(ddp, args.device, args.small))
        if args.json:
            Path(args.json).write_text(json.dumps(ddp, indent=2))
        return 0
    results = run(args.device, args.small, args.classes, args.batch, args.steps, args.warmup, args.prec)
    print(format_report(results, args.device, args.small, args.classes, args.batch))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
