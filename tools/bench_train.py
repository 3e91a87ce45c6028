#!/usr/bin/env python
"""Training-step benchmark of the distillation trainers (a tool, not a test).

Measures, for PromptKD, PromptKD_RSM and Simple_RSM built exactly as ``train.py`` builds them (random
weights, a throw-away fake dataset with ``--classes`` classes, synthetic batches):
- images/s of ``forward_backward`` and peak memory (CUDA: max allocated; CPU: the process's own peak
  resident set, VmHWM, not counting data-loader worker processes);
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

``--real-sizes`` times, per trainer in a fresh process (37 classes by default, batch 8): the training step,
one whole epoch through the real data loader, and the process's peak memory (the side-by-side comparison
with the original code is this one command). ``--matrix`` times PromptKD and PromptKD_RSM at
``--batches`` x ``--precs`` and prints each step's FLOP count (``step_flops``), the TFLOP/s it reaches and,
on a known GPU, the fraction of its dense bf16 peak. ``--tiny`` uses the tests' towers.

    python tools/bench_train.py --device cpu --real-sizes
    python tools/bench_train.py --device cuda --matrix --batches 8 64 --precs fp16 bf16
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Dict, Iterator, Optional

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
TINY = {"student": PRESETS["tiny"], "teacher": PRESETS["tiny-large"]}  # for the tests: seconds on a CPU


def pick_sizes(small) -> Dict[str, dict]:
    """``small`` is False (real sizes), True (CPU-sized towers) or "tiny" (the tests' towers)."""
    return TINY if small == "tiny" else SMALL if small else REAL


def sizes_label(small) -> str:
    return "tiny test towers" if small == "tiny" else "small CPU-sized towers" if small else \
        "ViT-B/16 student, ViT-L/14 teacher, 224 px"
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
        if str(name_or_path) in states:  # the caller's own tensors, as from a file (a model may take them)
            return {k: v.clone() for k, v in states[str(name_or_path)].items()}
        return original(name_or_path, **kwargs)

    clip.load_state_dict = load_state_dict
    teacher_mod.read_teacher_state_dict = lambda path: dict(teacher_ckpt)
    return states


@contextlib.contextmanager
def served_random_weights(sizes: Dict[str, dict], classnames) -> Iterator[Dict[str, dict]]:
    """`install_random_weights` for the duration of a block; the real loaders are restored after it (the
    tests call the benchmark in their own process)."""
    import trainers.teacher as teacher_mod

    saved = clip.load_state_dict, teacher_mod.read_teacher_state_dict
    try:
        yield install_random_weights(sizes, classnames)
    finally:
        clip.load_state_dict, teacher_mod.read_teacher_state_dict = saved


def build_trainer(name: str, root: str, work: str, sizes: Dict[str, dict], device: str, prec: str,
                  batch: int, keep_text_tower: bool = False, weights=("bench-student", "bench-teacher")):
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
        "USE_CUDA", device == "cuda", "MODEL.BACKBONE.WEIGHTS", weights[0],
        "TRAINER.PROMPTKD.TEACHER_WEIGHTS", weights[1], "TRAINER.PROMPTKD.TEACHER_ROOT",
        os.path.join(work, "teacher_model"), "TRAINER.PROMPTKD.PREC", prec,
        "TRAINER.PROMPTKD.PROMPT_DEPTH_VISION", depth, "TRAINER.PROMPTKD.PROMPT_DEPTH_TEXT", depth,
        "TRAINER.PROMPTKD.KD_WEIGHT", 1000.0,
    ])
    cfg.freeze()
    from trainers.distill import DistillTrainer

    release = DistillTrainer.RELEASE_TEACHER_TEXT_TOWER
    DistillTrainer.RELEASE_TEACHER_TEXT_TOWER = not keep_text_tower  # kept to time the original's text pass
    try:
        trainer = dassl_build(cfg)
    finally:
        DistillTrainer.RELEASE_TEACHER_TEXT_TOWER = release
    trainer.set_model_mode("train")
    trainer.batch_idx, trainer.num_batches, trainer.epoch = 0, 10 ** 9, 0  # never step the LR here
    return trainer


# Dense (no sparsity) bf16 tensor-core peak of common GPUs, in TFLOP/s, matched by a substring of the
# device name (first match wins, so the more specific names come first). --peak-tflops overrides it.
DENSE_BF16_PEAK_TFLOPS = (("H200", 989.0), ("H100 PCIe", 756.0), ("H100", 989.0), ("A100", 312.0),
                          ("L40S", 362.0), ("L4", 121.0), ("A10G", 70.0), ("A10", 125.0))


def dense_bf16_peak_tflops(device_name: str) -> Optional[float]:
    """The GPU's dense bf16 peak (TFLOP/s) from the table above, or None for an unknown device."""
    for key, peak in DENSE_BF16_PEAK_TFLOPS:
        if key in device_name:
            return peak
    return None


def vit_forward_flops(size: dict, extra_tokens: int = 0) -> float:
    """Multiply-adds x 2 of one image through a CLIP ViT image tower (patch embedding, the transformer
    layers, the output projection); ``extra_tokens`` counts prompt tokens appended to the sequence.
    Per layer with n tokens of width w: 24 n w^2 (QKV, output and 4x MLP projections) + 4 n^2 w (the
    two attention matmuls). Layer norms, softmax and GELU are left out (a few % at these sizes)."""
    res, patch, width = size["image_resolution"], size["vision_patch_size"], size["vision_width"]
    patches = (res // patch) ** 2
    tokens = patches + 1 + extra_tokens
    embed = 2 * patches * 3 * patch * patch * width
    layers = size["vision_layers"] * (24 * tokens * width ** 2 + 4 * tokens ** 2 * width)
    return float(embed + layers + 2 * width * size["embed_dim"])


def step_flops(sizes: Dict[str, dict], batch: int, prompt_tokens: int = 4) -> float:
    """FLOPs of one distillation step: the frozen teacher's image forward, plus the student's image
    forward and backward. The student's weights are frozen (only prompts and the projector learn), so its
    backward computes gradients of activations only: about one forward again, counted as 2x forward for
    the whole tower (the attention matmuls' second operand gradient is the small remainder, ignored).
    Text towers are not run per step (class features are cached)."""
    teacher = vit_forward_flops(sizes["teacher"], prompt_tokens)
    student = vit_forward_flops(sizes["student"], prompt_tokens)
    return batch * (teacher + 2 * student)


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
    """Peak memory in MiB: CUDA's max allocated; on the CPU this process's own peak resident set (VmHWM).

    ``getrusage``'s ``ru_maxrss`` is not used on Linux: a process started from another one reports at least
    the parent's resident size at the fork (kept across exec), so a fresh worker started by a parent that
    wrote gigabytes of weights would report the parent's peak. Data-loader workers are other processes:
    their memory is not counted (the benchmarks load data in the main process)."""
    if device == "cuda":
        return torch.cuda.max_memory_allocated() / 2 ** 20
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # no /proc: KiB on Linux


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
    if device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("error: --device cuda but no CUDA device is available (use --device cpu --small)")
    sizes = pick_sizes(small)
    prec = prec or ("fp16" if device == "cuda" else "fp32")
    results: Dict[str, Dict[str, float]] = {}
    with contextlib.ExitStack() as stack, tempfile.TemporaryDirectory(prefix="bench_train_") as work:
        root = _fake_world(work, classes)
        classnames = [f"class {i}" for i in range(classes)]
        stack.enter_context(served_random_weights(sizes, classnames))
        for name in TRAINERS:
            trainer = build_trainer(name, root, work, sizes, device, prec, batch, keep_text_tower=(name == "PromptKD"))
            results[name] = bench_one(trainer, device, batch, steps, warmup, extra=(name == "PromptKD"))
            del trainer
            if device == "cuda":
                torch.cuda.empty_cache()
    base, rsm = results["PromptKD"]["step_s"], results["PromptKD_RSM"]["step_s"]
    results["summary"] = {"rsm_overhead_pct": 100.0 * (rsm - base) / base,
                          "caching_speedup": results["PromptKD"]["caching_speedup"]}
    return results


def _fake_world(work: str, classes: int, train_per_class: int = 1) -> str:
    """A throw-away fake Caltech101 and an empty teacher checkpoint file under ``work``; returns the data root."""
    from tools.make_fake_dataset import make_fake_dataset

    root = os.path.join(work, "data")
    make_fake_dataset("Caltech101", root, num_classes=classes, train_per_class=train_per_class, val_per_class=1,
                      test_per_class=1, image_size=16)
    ckpt = Path(work, "teacher_model", "Caltech101", "VLPromptLearner", "model-best.pth.tar")
    ckpt.parent.mkdir(parents=True, exist_ok=True)
    ckpt.write_bytes(b"")  # placeholder: the state dict is served from memory
    return root


def run_matrix(device: str = "cuda", small: bool = False, classes: int = 100, batches=(8, 64),
               precs=("fp16", "bf16"), trainers=("PromptKD", "PromptKD_RSM"), steps: int = 10, warmup: int = 3,
               peak_tflops: Optional[float] = None) -> Dict[str, object]:
    """Every (trainer, batch, precision): step time, images/s, peak memory, FLOPs and achieved TFLOP/s
    (with the fraction of the dense bf16 peak on a known GPU); plus the RSM overhead per (batch, precision)."""
    if device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("error: --device cuda but no CUDA device is available (use --device cpu --small)")
    sizes = pick_sizes(small)
    name = torch.cuda.get_device_name(0) if device == "cuda" else "CPU"
    peak = peak_tflops if peak_tflops is not None else (dense_bf16_peak_tflops(name) if device == "cuda" else None)
    rows = []
    with contextlib.ExitStack() as stack, tempfile.TemporaryDirectory(prefix="bench_matrix_") as work:
        root = _fake_world(work, classes)
        stack.enter_context(served_random_weights(sizes, [f"class {i}" for i in range(classes)]))
        for prec in precs:
            for batch in batches:
                for trainer_name in trainers:
                    trainer = build_trainer(trainer_name, root, work, sizes, device, prec, batch)
                    row = {"trainer": trainer_name, "batch": batch, "prec": prec,
                           **bench_one(trainer, device, batch, steps, warmup, extra=False)}
                    del trainer
                    if device == "cuda":
                        torch.cuda.empty_cache()
                    row["flops_per_step"] = step_flops(sizes, batch)
                    row["tflops_per_s"] = row["flops_per_step"] / row["step_s"] / 1e12
                    row["fraction_of_bf16_peak"] = row["tflops_per_s"] / peak if peak else None
                    rows.append(row)
    overhead = {}
    for prec in precs:
        for batch in batches:
            step = {r["trainer"]: r["step_s"] for r in rows if r["prec"] == prec and r["batch"] == batch}
            if "PromptKD" in step and "PromptKD_RSM" in step:
                overhead[f"{prec}_batch{batch}"] = 100.0 * (step["PromptKD_RSM"] - step["PromptKD"]) / step["PromptKD"]
    return {"device": name, "sizes": sizes_label(small), "dense_bf16_peak_tflops": peak, "rows": rows,
            "rsm_overhead_pct": overhead}


def format_matrix(result: Dict[str, object]) -> str:
    lines = [f"Device: {result['device']}; {result['sizes']}; dense bf16 peak "
             f"{result['dense_bf16_peak_tflops'] or 'unknown'} TFLOP/s", "",
             "| trainer | batch | prec | step (ms) | images/s | peak memory (MiB) | GFLOP/step | TFLOP/s | of bf16 peak |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in result["rows"]:
        frac = "-" if r["fraction_of_bf16_peak"] is None else f"{100 * r['fraction_of_bf16_peak']:.1f}%"
        lines.append(f"| {r['trainer']} | {r['batch']} | {r['prec']} | {1000 * r['step_s']:.1f} | "
                     f"{r['images_per_s']:.1f} | {r['peak_mem_mb']:.0f} | {r['flops_per_step'] / 1e9:.1f} | "
                     f"{r['tflops_per_s']:.2f} | {frac} |")
    lines.append("")
    lines += [f"RSM overhead {key}: {value:+.1f}%" for key, value in result["rsm_overhead_pct"].items()]
    return "\n".join(lines)


def _epoch_worker(spec: Dict[str, object], results) -> None:
    """One fresh process of `run_real_sizes`: build one trainer, time its step and one whole epoch."""
    try:
        sizes = pick_sizes(spec["small"])
        device, batch, classes = str(spec["device"]), int(spec["batch"]), int(spec["classes"])
        if spec["weights"] is None:
            install_random_weights(sizes, [f"class {i}" for i in range(classes)])
            weights = ("bench-student", "bench-teacher")
        else:
            weights = tuple(spec["weights"])
        trainer = build_trainer(str(spec["trainer"]), str(spec["root"]), str(spec["work"]), sizes, device,
                                str(spec["prec"]), batch, weights=weights)
        out = bench_one(trainer, device, batch, int(spec["steps"]), int(spec["warmup"]), extra=False)
        trainer.epoch = 0
        _sync(device)
        start = time.perf_counter()
        trainer.run_epoch()  # the real loader: decode, resize/crop, collate, then the steps
        _sync(device)
        out["epoch_s"] = time.perf_counter() - start
        out["epoch_batches"] = trainer.num_batches
        out["peak_mem_mb"] = peak_memory_mb(device)
        results.put((out, None))
    except BaseException as exc:  # noqa: BLE001  (reported by the parent)
        import traceback

        results.put((None, f"{type(exc).__name__}: {exc}\n{traceback.format_exc()[-3000:]}"))


def _result_of(worker, results, name: str):
    """The (result, error) a measuring process puts on `results`; an error instead of waiting for ever when
    the process dies without one (killed for memory, a crash in native code)."""
    import queue as queue_module

    while True:
        try:
            return results.get(timeout=2.0)
        except queue_module.Empty:
            if not worker.is_alive():
                try:  # it may have put its result just before exiting
                    return results.get(timeout=2.0)
                except queue_module.Empty:
                    return None, (f"the measuring process of {name} exited with code {worker.exitcode} without a "
                                  "result (out of memory?)")


def run_real_sizes(device: str = "cpu", small: bool = False, classes: int = 37, batch: int = 8, steps: int = 3,
                   warmup: int = 1, prec: Optional[str] = None, train_per_class: int = 1,
                   trainers=("PromptKD", "PromptKD_RSM")) -> Dict[str, Dict[str, float]]:
    """Per trainer, in a fresh process each (so peak memory is that trainer's alone): the step time, one
    epoch over a fake dataset through the real data loader, and the process's peak memory.

    Real and tiny sizes read random weights from files, as train.py does (student and teacher CLIP
    weights, a PromptSRC-format teacher checkpoint with its zero-shot tower copy), written once here, so
    the peak memory is a run's own; small sizes are served from memory."""
    import multiprocessing

    prec = prec or ("fp16" if device == "cuda" else "fp32")
    results: Dict[str, Dict[str, float]] = {}
    context = multiprocessing.get_context("spawn")
    with tempfile.TemporaryDirectory(prefix="bench_real_") as work:
        root = _fake_world(work, classes, train_per_class)
        weights = None
        if small in (False, "tiny"):
            from tools.make_tiny_weights import make_tiny_weights

            presets = ("tiny", "tiny-large") if small == "tiny" else ("ViT-B/16", "ViT-L/14")
            files = make_tiny_weights(work, "Caltech101", [f"class {i}" for i in range(classes)], *presets)
            weights = (str(files["student"]), str(files["teacher"]))
        for name in trainers:
            queue = context.Queue()
            spec = {"root": root, "work": work, "small": small, "classes": classes, "device": device, "prec": prec,
                    "batch": batch, "steps": steps, "warmup": warmup, "trainer": name, "weights": weights}
            worker = context.Process(target=_epoch_worker, args=(spec, queue))
            worker.start()
            out, error = _result_of(worker, queue, name)
            worker.join()
            if error:
                raise SystemExit(f"error: {name}: {error}")
            results[name] = out
    return results


def format_real_sizes(results: Dict[str, Dict[str, float]], device: str, small: bool, classes: int, batch: int) -> str:
    sizes = sizes_label(small)
    lines = [f"{device}; {sizes}; batch {batch}; {classes} classes; one fresh process per trainer; peak memory: "
             f"{'max CUDA memory allocated' if device == 'cuda' else 'each process its own peak RSS (VmHWM)'}", "",
             "| trainer | step (s) | epoch with data loading (s) | batches | peak memory (MiB) |", "|---|---|---|---|---|"]
    for name, r in results.items():
        lines.append(f"| {name} | {r['step_s']:.3f} | {r['epoch_s']:.2f} | {r['epoch_batches']} | {r['peak_mem_mb']:.0f} |")
    return "\n".join(lines)


SWEEP_OMEGAS = (0.0, 1.0, 5.0, 10.0, 25.0, 50.0, 100.0)  # a 7-point omega sweep of PromptKD_RSM


def run_teacher_cache_sweep(omegas=SWEEP_OMEGAS, epochs: int = 2, train_per_class: int = 8, classes: int = 10,
                            dtype: str = "fp16", teacher_preset: str = "tiny-large") -> Dict[str, float]:
    """Wall time of a PromptKD_RSM omega sweep (seeded random augmentation, on the CPU, tiny student) with
    the teacher run in every run (the faster of one sweep before and one after), against filling the disk
    teacher cache once and reading it in every run."""
    from dassl.engine import build_trainer as dassl_build
    from dassl.utils import set_random_seed
    from tools.cache_teacher import fill_cache
    from tools.device_check import tiny_opts
    from tools.make_fake_dataset import make_fake_dataset
    from tools.make_tiny_weights import make_tiny_weights
    from trainers import teacher_cache
    from trainers.config import extend_cfg
    from dassl.config import get_cfg_default

    import datasets  # noqa: F401
    import trainers  # noqa: F401

    with tempfile.TemporaryDirectory(prefix="bench_sweep_") as work:
        root = os.path.join(work, "data")
        make_fake_dataset("OxfordPets", root, num_classes=classes, train_per_class=train_per_class,
                          test_per_class=1, image_size=48)
        from tools.device_check import _classnames
        weights = make_tiny_weights(os.path.join(work, "weights"), "OxfordPets", _classnames(root),
                                    teacher_preset=teacher_preset)
        world = {"root": root, "student": str(weights["student"]), "teacher": str(weights["teacher"]),
                 "teacher_root": str(weights["teacher_root"])}
        cache_dir = os.path.join(work, "cache")

        def build(name: str, out: str, extra):
            cfg = extend_cfg(get_cfg_default())
            cfg.merge_from_file(os.path.join("configs", "trainers", "PromptKD", "vit_b16_c2_ep20_batch8_4+4ctx.yaml"))
            cfg.merge_from_list(["DATASET.ROOT", root, "TRAINER.NAME", name, "SEED", 1, "OUTPUT_DIR",
                                 os.path.join(work, out)] + tiny_opts(world, False) +
                                ["OPTIM.MAX_EPOCH", epochs, "DATALOADER.SEEDED_AUGMENTATION", True,
                                 "TRAINER.PROMPTKD.TEACHER_CACHE_DTYPE", dtype, "TEST.FINAL_MODEL", "last_step",
                                 "DATALOADER.TRAIN_X.BATCH_SIZE", 8] + list(extra))
            cfg.freeze()
            set_random_seed(1)
            return dassl_build(cfg)

        sweeps = []

        def sweep(cached: bool) -> float:
            sweeps.append(cached)  # a fresh output folder per sweep: a finished run folder would be resumed
            start = time.perf_counter()
            for omega in omegas:
                extra = ["TRAINER.RSM.WEIGHT", omega]
                if cached:
                    extra += ["TRAINER.PROMPTKD.TEACHER_CACHE_DIR", cache_dir]
                trainer = build("PromptKD_RSM", f"sweep{len(sweeps)}_{omega}", extra)
                trainer.train()
            return time.perf_counter() - start

        plain_first = sweep(False)
        start = time.perf_counter()
        stats = fill_cache(build("PromptKD", "fill", []), cache_dir, epochs, teacher_cache.STORE_DTYPES[dtype])
        fill = time.perf_counter() - start
        cached = sweep(True)
        plain = min(plain_first, sweep(False))  # the faster of a sweep before and one after (shared machines)
    return {"runs": len(omegas), "epochs": epochs, "train_images": classes * train_per_class,
            "sweep_plain_s": plain, "cache_fill_s": fill, "sweep_cached_s": cached,
            "speedup": plain / (fill + cached), "bytes_per_image_epoch": stats["bytes_per_image_epoch"]}


def format_sweep(r: Dict[str, float]) -> str:
    return "\n".join([
        f"PromptKD_RSM omega sweep: {r['runs']} runs x {r['epochs']} epochs, {r['train_images']} training images, "
        f"seeded random augmentation, CPU, tiny towers", "",
        f"teacher in every run: {r['sweep_plain_s']:.1f} s",
        f"teacher cache: fill {r['cache_fill_s']:.1f} s + sweep {r['sweep_cached_s']:.1f} s "
        f"-> x{r['speedup']:.2f}",
        f"disk: {r['bytes_per_image_epoch']:.0f} bytes per image-epoch"])


def format_report(results: Dict[str, Dict[str, float]], device: str, small: bool, classes: int, batch: int) -> str:
    dev = torch.cuda.get_device_name(0) if device == "cuda" else "CPU"
    sizes = sizes_label(small)
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
        sizes = pick_sizes(spec["small"])
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
    if nproc < 2:
        raise SystemExit("error: --ddp needs at least 2 processes")
    if batch % nproc:
        raise SystemExit(f"error: --batch {batch} (the global batch) must divide by --ddp {nproc}")
    if device == "cuda" and torch.cuda.device_count() < nproc:
        raise SystemExit(f"error: --ddp {nproc} on cuda needs {nproc} GPUs, {torch.cuda.device_count()} visible")
    prec = prec or ("fp16" if device == "cuda" else "fp32")
    cores = torch.get_num_threads()
    with tempfile.TemporaryDirectory(prefix="bench_ddp_") as work:
        root = _fake_world(work, classes)
        spec = {"root": root, "work": work, "small": small, "classes": classes, "device": device, "prec": prec,
                "batch": batch, "steps": steps, "warmup": warmup}
        one = _time_processes(1, cores, spec)
        many = _time_processes(nproc, max(1, cores // nproc), spec)
    return {"processes": nproc, "global_batch": batch, "threads": cores, "step_1_s": one, "step_n_s": many,
            "speedup": one / many, "efficiency": one / many / nproc}


def format_ddp_report(r: Dict[str, float], device: str, small: bool) -> str:
    sizes = sizes_label(small)
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
    parser.add_argument("--tiny", action="store_true", help="the tests' tiny towers (checks that the tool runs)")
    parser.add_argument("--classes", type=int, default=100, help="number of classes (teacher text features)")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=10, help="timed steps per measurement (median)")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--prec", choices=("fp16", "bf16", "fp32"), default=None,
                        help="default: fp16 on cuda, fp32 on cpu")
    parser.add_argument("--json", metavar="FILE", help="also write the raw numbers as JSON")
    parser.add_argument("--ddp", type=int, metavar="N", default=0,
                        help="instead: PromptKD's step in N processes (batch / N images each) against one process")
    parser.add_argument("--real-sizes", action="store_true",
                        help="instead: step, one epoch with data loading, and peak memory per trainer, each in a "
                             "fresh process (default 37 classes with --classes unset)")
    parser.add_argument("--matrix", action="store_true",
                        help="instead: PromptKD and PromptKD_RSM at --batches x --precs, with FLOPs and the "
                             "fraction of the GPU's dense bf16 peak")
    parser.add_argument("--batches", type=int, nargs="+", default=[8, 64], help="batch sizes of --matrix")
    parser.add_argument("--precs", nargs="+", default=["fp16", "bf16"], choices=("fp16", "bf16", "fp32"),
                        help="precisions of --matrix")
    parser.add_argument("--peak-tflops", type=float, default=None,
                        help="the GPU's dense bf16 peak in TFLOP/s (default: from a table of known GPUs)")
    parser.add_argument("--teacher-cache", action="store_true",
                        help="instead: a 7-point PromptKD_RSM omega sweep with and without the disk teacher cache")
    args = parser.parse_args(argv)
    if args.teacher_cache:
        sweep = run_teacher_cache_sweep()
        print(format_sweep(sweep))
        if args.json:
            Path(args.json).write_text(json.dumps(sweep, indent=2))
        return 0
    if args.tiny:
        args.small = "tiny"
    if args.real_sizes:
        classes = args.classes if "--classes" in (argv or sys.argv) else 37
        real = run_real_sizes(args.device, args.small, classes, args.batch, args.steps, args.warmup, args.prec)
        print(format_real_sizes(real, args.device, args.small, classes, args.batch))
        if args.json:
            Path(args.json).write_text(json.dumps(real, indent=2))
        return 0
    if args.matrix:
        matrix = run_matrix(args.device, args.small, args.classes, tuple(args.batches), tuple(args.precs),
                            steps=args.steps, warmup=args.warmup, peak_tflops=args.peak_tflops)
        print(format_matrix(matrix))
        if args.json:
            Path(args.json).write_text(json.dumps(matrix, indent=2))
        return 0
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
