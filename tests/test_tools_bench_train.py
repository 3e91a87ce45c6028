"""tools/bench_train.py's --real-sizes and --matrix reports, run with the tests' tiny towers on the CPU."""
from __future__ import annotations

import json

from tools import bench_train


def test_real_sizes_reports_step_epoch_and_peak_memory_per_trainer(tmp_path, capsys):
    out = tmp_path / "real.json"
    code = bench_train.main(["--device", "cpu", "--tiny", "--real-sizes", "--classes", "4", "--batch", "2",
                             "--steps", "1", "--warmup", "0", "--json", str(out)])
    assert code == 0
    results = json.loads(out.read_text())
    assert set(results) == {"PromptKD", "PromptKD_RSM"}
    for r in results.values():
        # 4 classes x 1 training image = 4 images: two batches of 2 go through the real loader
        assert r["epoch_batches"] == 2
        assert r["epoch_s"] > 0 and r["step_s"] > 0 and r["peak_mem_mb"] > 0
    assert "epoch with data loading" in capsys.readouterr().out


def test_matrix_reports_flops_and_rsm_overhead(tmp_path):
    import clip
    import trainers.teacher as teacher_mod

    loaders = clip.load_state_dict, teacher_mod.read_teacher_state_dict
    result = bench_train.run_matrix("cpu", "tiny", classes=4, batches=(2, 4), precs=("fp32",), steps=1, warmup=0)
    rows = result["rows"]
    assert [(r["trainer"], r["batch"]) for r in rows] == [("PromptKD", 2), ("PromptKD_RSM", 2),
                                                         ("PromptKD", 4), ("PromptKD_RSM", 4)]
    assert rows[2]["flops_per_step"] == 2 * rows[0]["flops_per_step"]
    assert all(r["fraction_of_bf16_peak"] is None for r in rows)  # no known peak on a CPU
    assert set(result["rsm_overhead_pct"]) == {"fp32_batch2", "fp32_batch4"}
    assert "GFLOP/step" in bench_train.format_matrix(result)
    # the random-weight loaders were served for the benchmark only
    assert (clip.load_state_dict, teacher_mod.read_teacher_state_dict) == loaders


def test_teacher_cache_sweep_reports_both_timings_and_disk_size():
    r = bench_train.run_teacher_cache_sweep(omegas=(0.0, 50.0), epochs=1, train_per_class=2, classes=4)
    assert r["runs"] == 2 and r["train_images"] == 8
    assert r["sweep_plain_s"] > 0 and r["sweep_cached_s"] > 0 and r["cache_fill_s"] > 0
    # float16 features of the tiny teacher (48 values) plus the filled flag
    assert r["bytes_per_image_epoch"] >= 48 * 2
    assert "bytes per image-epoch" in bench_train.format_sweep(r)


def test_size_choice():
    assert bench_train.pick_sizes(False) is bench_train.REAL
    assert bench_train.pick_sizes(True) is bench_train.SMALL
    assert bench_train.pick_sizes("tiny") is bench_train.TINY
    assert bench_train.REAL["teacher"]["vision_width"] == 1024 and bench_train.REAL["student"]["vision_patch_size"] == 16


def test_cpu_peak_memory_is_the_process_own_not_its_parent(tmp_path):
    """A fresh process started after its parent touched 1.5 GiB reports its own peak (VmHWM), not the
    parent's (``ru_maxrss`` of a child starts from the parent's peak on Linux)."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    block = bytearray(3 * 2 ** 29)
    block[::4096] = b"\x01" * len(block[::4096])  # resident, then freed before the child starts
    del block
    repo = Path(__file__).resolve().parents[1]
    code = "from tools.bench_train import peak_memory_mb; print(peak_memory_mb('cpu'))"
    out = subprocess.run([sys.executable, "-c", code], cwd=repo, capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONPATH": str(repo)})
    child_peak = float(out.stdout.strip())
    assert 0 < child_peak < 1024  # importing torch is a few hundred MiB; the parent's 1.5 GiB is not counted


def test_a_measuring_process_that_dies_without_a_result_is_an_error_not_a_hang():
    import multiprocessing
    import os

    context = multiprocessing.get_context("spawn")
    results = context.Queue()
    worker = context.Process(target=os._exit, args=(3,))  # exits at once, puts nothing
    worker.start()
    out, error = bench_train._result_of(worker, results, "PromptKD")
    worker.join()
    assert out is None and "PromptKD" in error and "code 3" in error
