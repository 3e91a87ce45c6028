#!/usr/bin/env python
"""The one-command GPU check (``bash tools/device_check.sh``): everything a session lent a GPU should
measure once, early, in at most 8 minutes, written to one JSON summary.

Stages, each timed and recorded even when it fails (a failing stage never hides the others):
- ``tests``: the GPU-marked tests (``pytest -m gpu``), e.g. precision modes against fp32;
- ``precision``: the tiny PromptKD student's test-set logits in fp16 / bf16 / amp against fp32
  (``precision_agreement``; the numbers the GPU test asserts on);
- ``bench``: ``tools/bench_train.py``'s matrix at the real sizes (ViT-B/16 student, ViT-L/14 teacher,
  random weights, 224 px): PromptKD and PromptKD_RSM at batch 8 and 64 in fp16 and bf16 (images/s, peak
  memory, RSM overhead, FLOPs per step and the fraction of the GPU's dense bf16 peak);
- ``torchrun``: a one-epoch PromptKD run of ``train.py`` on tiny weights and a fake dataset, started by
  ``torchrun --standalone --nproc_per_node 1``.

Without a CUDA device it prints one line saying so and exits 0. ``--cpu-dry-run`` runs every stage on
the CPU with tiny towers and sizes (the tests do this), so the script is known to work before a GPU is
ever lent. The summary goes to ``--out``, else ``$DEVICE_CHECK_OUT``, else
``output/device_check/summary.json``.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import torch  # noqa: E402

DEFAULT_OUT = os.path.join("output", "device_check", "summary.json")
OUT_ENV = "DEVICE_CHECK_OUT"
TIME_BUDGET_S = 480  # the whole check must fit in 8 minutes on one GPU
# Largest |logits - fp32 logits| / max |fp32 logits| accepted per mode on the tiny student. fp16 keeps
# 11 mantissa bits (rounding ~5e-4 per op, a few dozen ops deep); bf16 keeps 8 (~4e-3 per op).
PRECISION_TOLERANCE = {"fp16": 1e-2, "amp": 1e-2, "bf16": 5e-2}
DATASET = "OxfordPets"
CLASSES = 5


def make_tiny_world(folder: str) -> Dict[str, str]:
    """A fake OxfordPets (5 classes) and tiny student / teacher weights with a PromptKD teacher checkpoint."""
    from tools.make_fake_dataset import make_fake_dataset
    from tools.make_tiny_weights import make_tiny_weights

    root = os.path.join(folder, "data")
    make_fake_dataset(DATASET, root, num_classes=CLASSES, train_per_class=2, test_per_class=2, image_size=16)
    weights = make_tiny_weights(os.path.join(folder, "weights"), DATASET, _classnames(root))
    return {"root": root, "student": str(weights["student"]), "teacher": str(weights["teacher"]),
            "teacher_root": str(weights["teacher_root"])}


def _classnames(root: str) -> List[str]:
    from dassl.config import get_cfg_default
    from dassl.data.datasets import build_dataset
    from trainers.config import extend_cfg

    import datasets  # noqa: F401  (registers the readers)

    cfg = extend_cfg(get_cfg_default())
    cfg.merge_from_list(["DATASET.NAME", DATASET, "DATASET.ROOT", root, "DATASET.NUM_SHOTS", 0])
    return list(build_dataset(cfg, protocol="base2novel").classnames)


def tiny_opts(world: Dict[str, str], use_cuda: bool, prec: str = "fp32") -> List[str]:
    """train.py / config options of a one-epoch tiny PromptKD run on ``world``."""
    return ["DATASET.NAME", DATASET, "DATASET.NUM_SHOTS", 0, "TRAINER.MODAL", "base2novel",
            "INPUT.SIZE", (32, 32), "DATALOADER.NUM_WORKERS", 0, "DATALOADER.TRAIN_X.BATCH_SIZE", 4,
            "DATALOADER.TEST.BATCH_SIZE", 8, "OPTIM.MAX_EPOCH", 1, "OPTIM.WARMUP_EPOCH", -1,
            "USE_CUDA", use_cuda, "MODEL.BACKBONE.WEIGHTS", world["student"],
            "TRAINER.PROMPTKD.TEACHER_WEIGHTS", world["teacher"],
            "TRAINER.PROMPTKD.TEACHER_ROOT", world["teacher_root"], "TRAINER.PROMPTKD.PROMPT_DEPTH_VISION", 2,
            "TRAINER.PROMPTKD.PROMPT_DEPTH_TEXT", 2, "TRAINER.PROMPTKD.PREC", prec]


CONFIG_FILE = os.path.join("configs", "trainers", "PromptKD", "vit_b16_c2_ep20_batch8_4+4ctx.yaml")


def _student_test_logits(world: Dict[str, str], work: str, use_cuda: bool, prec: str) -> torch.Tensor:
    """The tiny PromptKD student's logits over the test split (all classes), under precision ``prec``."""
    from dassl.config import get_cfg_default
    from dassl.engine import build_trainer
    from trainers.config import extend_cfg

    import datasets  # noqa: F401
    import trainers  # noqa: F401

    cfg = extend_cfg(get_cfg_default())
    cfg.merge_from_file(str(REPO / CONFIG_FILE))
    cfg.merge_from_list(["DATASET.ROOT", world["root"], "TRAINER.NAME", "PromptKD", "SEED", 1,
                         "OUTPUT_DIR", os.path.join(work, f"precision_{prec}")] + tiny_opts(world, use_cuda, prec))
    cfg.freeze()
    torch.manual_seed(1)
    trainer = build_trainer(cfg)
    trainer.set_model_mode("eval")
    rows = []
    with torch.no_grad():
        for batch in trainer.test_loader:
            image, _ = trainer.parse_batch_test(batch)
            with trainer.precision.autocast():
                features, _ = trainer.student(image)
                rows.append(trainer.student_logits(features, trainer.text_features).float().cpu())
    return torch.cat(rows)


def precision_agreement(work: str, use_cuda: bool, modes: Sequence[str] = ("fp16", "bf16", "amp")) -> Dict[str, dict]:
    """Per mode: the largest logit difference to fp32 relative to the largest fp32 logit, the share of
    test images with the same prediction, and ``ok``: the difference is within ``PRECISION_TOLERANCE`` and
    every image whose fp32 top-2 margin exceeds twice the difference keeps its prediction (closer calls
    may legitimately flip)."""
    world = make_tiny_world(os.path.join(work, "world"))
    reference = _student_test_logits(world, work, use_cuda, "fp32")
    scale = reference.abs().max().clamp_min(1e-12)
    top2 = reference.topk(2, dim=1).values
    margin = (top2[:, 0] - top2[:, 1]) / scale
    out = {}
    for mode in modes:
        logits = _student_test_logits(world, work, use_cuda, mode)
        diff = float((logits - reference).abs().max() / scale)
        same = logits.argmax(1) == reference.argmax(1)
        clear = margin > 2 * diff
        out[mode] = {"max_rel_logit_diff": diff, "same_prediction": float(same.float().mean()),
                     "tolerance": PRECISION_TOLERANCE[mode],
                     "ok": bool(diff <= PRECISION_TOLERANCE[mode] and bool(same[clear].all()))}
    return out


def run_gpu_tests(test_paths: Sequence[str], timeout_s: float) -> Dict[str, object]:
    """``pytest -m gpu`` over ``test_paths`` in a fresh process; its exit code and last lines."""
    cmd = [sys.executable, "-m", "pytest", "-q", "-m", "gpu", "-p", "no:cacheprovider", *test_paths]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=timeout_s)
    tail = (proc.stdout + proc.stderr).strip().splitlines()[-5:]
    # exit code 5: nothing selected, which is a failure of this check (the marker must select tests)
    return {"command": " ".join(cmd), "returncode": proc.returncode, "ok": proc.returncode == 0, "tail": tail}


def run_torchrun(work: str, use_cuda: bool, timeout_s: float) -> Dict[str, object]:
    """A one-epoch tiny PromptKD run of train.py under ``torchrun --standalone --nproc_per_node 1``."""
    world = make_tiny_world(os.path.join(work, "torchrun_world"))
    output = os.path.join(work, "torchrun_run")
    opts = [str(v) if not isinstance(v, tuple) else f"({v[0]},{v[1]})" for v in tiny_opts(world, use_cuda)]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "1",
           str(REPO / "train.py"), "--root", world["root"], "--seed", "1", "--trainer", "PromptKD",
           "--config-file", str(REPO / CONFIG_FILE), "--output-dir", output, *opts]
    env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"))
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=timeout_s, env=env)
    results = Path(output, "results.json")
    tail = (proc.stdout + proc.stderr).strip().splitlines()[-5:]
    return {"returncode": proc.returncode, "results_json": results.is_file(),
            "ok": proc.returncode == 0 and results.is_file(), "tail": tail}


def run_bench(dry_run: bool, steps: int) -> Dict[str, object]:
    """tools/bench_train.py's matrix: real sizes on the GPU; tiny towers, batch 2 and fp32 on a dry run."""
    from tools.bench_train import run_matrix

    if dry_run:
        return run_matrix("cpu", "tiny", classes=CLASSES, batches=(2,), precs=("fp32",), steps=1, warmup=0)
    return run_matrix("cuda", False, classes=100, batches=(8, 64), precs=("fp16", "bf16"), steps=steps, warmup=2)


def _stage(summary: Dict[str, object], name: str, fn: Callable[[], Dict[str, object]]) -> None:
    """Run one stage, recording its result (or its error) and wall time under ``summary["stages"]``."""
    print(f"== device check: {name}", flush=True)
    start = time.perf_counter()
    try:
        result = fn()
    except BaseException as exc:  # noqa: BLE001  (recorded; the other stages still run)
        if isinstance(exc, KeyboardInterrupt):
            raise
        result = {"ok": False, "error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()[-2000:]}
    result.setdefault("ok", True)
    result["wall_s"] = round(time.perf_counter() - start, 2)
    summary["stages"][name] = result
    print(f"   {name}: {'ok' if result['ok'] else 'FAILED'} in {result['wall_s']} s", flush=True)


def output_path(arg: Optional[str]) -> Path:
    """--out, else $DEVICE_CHECK_OUT, else output/device_check/summary.json (relative to the repository)."""
    path = Path(arg or os.environ.get(OUT_ENV) or DEFAULT_OUT)
    return path if path.is_absolute() else REPO / path


STAGES = ("tests", "precision", "bench", "torchrun")


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description="The one-command GPU check: GPU tests, precision, benchmarks, "
                                                 "torchrun; one JSON summary.")
    parser.add_argument("--out", help=f"summary JSON path (default ${OUT_ENV}, else {DEFAULT_OUT})")
    parser.add_argument("--cpu-dry-run", action="store_true",
                        help="run every stage on the CPU with tiny sizes (checks the script, measures nothing)")
    parser.add_argument("--stages", nargs="+", choices=STAGES, default=list(STAGES))
    parser.add_argument("--tests", nargs="+", default=["tests"], help="test paths searched for gpu-marked tests")
    parser.add_argument("--steps", type=int, default=10, help="timed steps per benchmark point")
    args = parser.parse_args(argv)

    dry = args.cpu_dry_run
    if not dry and not torch.cuda.is_available():
        print("device check: skipped, no CUDA device is available (nothing measured; --cpu-dry-run checks the "
              "script on the CPU)")
        return 0
    device = "CPU (dry run, tiny sizes)" if dry else torch.cuda.get_device_name(0)
    summary: Dict[str, object] = {"device": device, "dry_run": dry, "torch": torch.__version__,
                                  "cuda": torch.version.cuda, "stages": {}}
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="device_check_") as work:
        plan = {
            "tests": lambda: run_gpu_tests(args.tests, TIME_BUDGET_S / 3),
            "precision": lambda: _precision_stage(work, not dry),
            "bench": lambda: run_bench(dry, args.steps),
            "torchrun": lambda: run_torchrun(work, not dry, TIME_BUDGET_S / 4),
        }
        try:
            for name in args.stages:
                _stage(summary, name, plan[name])
        except KeyboardInterrupt:  # device_check.sh's 8-minute limit: keep what was measured
            summary["interrupted"] = True
            summary["stages"].setdefault(name, {"ok": False, "error": "interrupted (time limit)"})
    summary["wall_s"] = round(time.perf_counter() - start, 2)
    summary["ok"] = not summary.get("interrupted") and all(stage["ok"] for stage in summary["stages"].values())
    out = output_path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(summary, indent=2))
    print(f"device check: {'all stages ok' if summary['ok'] else 'SOME STAGES FAILED'} in {summary['wall_s']} s; "
          f"summary: {out}")
    return 0 if summary["ok"] else 1


def _precision_stage(work: str, use_cuda: bool) -> Dict[str, object]:
    modes = precision_agreement(work, use_cuda)
    return {"modes": modes, "ok": all(mode["ok"] for mode in modes.values())}


if __name__ == "__main__":
    sys.exit(main())
