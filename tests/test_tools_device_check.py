"""tools/device_check.py (behind `bash tools/device_check.sh`): every stage runs on the CPU with tiny sizes
(--cpu-dry-run), the check skips cleanly without CUDA, and the GPU-marked precision test."""
from __future__ import annotations

import json
import os
import subprocess

import pytest
import torch

from tools import bench_train, device_check

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def test_without_cuda_the_script_skips_with_one_line_and_exit_0(tmp_path):
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="", DEVICE_CHECK_OUT=str(tmp_path / "s.json"))
    proc = subprocess.run(["bash", os.path.join(REPO, "tools", "device_check.sh")], capture_output=True, text=True,
                          env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 1 and "skipped" in lines[0] and "no CUDA device" in lines[0]
    assert not (tmp_path / "s.json").exists()


def test_cpu_dry_run_runs_every_stage_and_writes_one_summary(tmp_path, monkeypatch):
    out = tmp_path / "summary.json"
    monkeypatch.setenv(device_check.OUT_ENV, str(out))
    code = device_check.main(["--cpu-dry-run", "--tests", os.path.join("tests", "test_tools_device_check.py")])
    summary = json.loads(out.read_text())
    assert code == 0, {k: v.get("error") or v.get("tail") for k, v in summary["stages"].items()}
    assert summary["dry_run"] and summary["ok"]
    assert set(summary["stages"]) == set(device_check.STAGES)
    assert summary["stages"]["tests"]["returncode"] == 0  # the gpu tests were selected (and skipped on the CPU)
    rows = summary["stages"]["bench"]["rows"]
    assert {r["trainer"] for r in rows} == {"PromptKD", "PromptKD_RSM"}
    assert all(r["images_per_s"] > 0 and r["flops_per_step"] > 0 for r in rows)
    assert "fp32_batch2" in summary["stages"]["bench"]["rsm_overhead_pct"]
    assert summary["stages"]["torchrun"]["results_json"]
    assert set(summary["stages"]["precision"]["modes"]) == {"fp16", "bf16", "amp"}


def test_a_failing_stage_is_recorded_and_fails_the_check(tmp_path, monkeypatch):
    monkeypatch.setattr(device_check, "run_bench", lambda dry, steps: 1 / 0)
    out = tmp_path / "s.json"
    assert device_check.main(["--cpu-dry-run", "--stages", "bench", "--out", str(out)]) == 1
    stage = json.loads(out.read_text())["stages"]["bench"]
    assert not stage["ok"] and "ZeroDivisionError" in stage["error"]


def test_summary_path_precedence(monkeypatch, tmp_path):
    monkeypatch.delenv(device_check.OUT_ENV, raising=False)
    assert device_check.output_path(None) == device_check.REPO / device_check.DEFAULT_OUT
    monkeypatch.setenv(device_check.OUT_ENV, str(tmp_path / "env.json"))
    assert device_check.output_path(None) == tmp_path / "env.json"
    assert device_check.output_path(str(tmp_path / "arg.json")) == tmp_path / "arg.json"


def test_flop_count_matches_the_published_vit_sizes():
    # published image-tower costs at 224 px: ViT-B/16 17.6 GMACs, ViT-L/14 81.1 GMACs (1 MAC = 2 FLOPs)
    assert bench_train.vit_forward_flops(bench_train.REAL["student"]) == pytest.approx(2 * 17.6e9, rel=0.05)
    assert bench_train.vit_forward_flops(bench_train.REAL["teacher"]) == pytest.approx(2 * 81.1e9, rel=0.05)
    one = bench_train.step_flops(bench_train.REAL, 1)
    assert bench_train.step_flops(bench_train.REAL, 64) == pytest.approx(64 * one)
    assert one > bench_train.vit_forward_flops(bench_train.REAL["teacher"], 4)


def test_dense_bf16_peak_table():
    assert bench_train.dense_bf16_peak_tflops("NVIDIA H100 80GB HBM3") == 989.0
    assert bench_train.dense_bf16_peak_tflops("NVIDIA H100 PCIe") == 756.0
    assert bench_train.dense_bf16_peak_tflops("NVIDIA A100-SXM4-80GB") == 312.0
    assert bench_train.dense_bf16_peak_tflops("Some Future GPU") is None


@pytest.mark.gpu
@needs_cuda
def test_precision_modes_predict_like_fp32_on_the_gpu(tmp_path):
    modes = device_check.precision_agreement(str(tmp_path), use_cuda=True)
    for mode, result in modes.items():
        assert result["max_rel_logit_diff"] > 0, f"{mode} did not change the computation (autocast not applied?)"
        assert result["ok"], (mode, result)


@pytest.mark.gpu
@needs_cuda
def test_bench_matrix_runs_on_the_gpu_with_tiny_towers():
    result = bench_train.run_matrix("cuda", "tiny", classes=5, batches=(2,), precs=("fp16", "bf16"), steps=1, warmup=1)
    assert len(result["rows"]) == 4 and all(r["peak_mem_mb"] > 0 for r in result["rows"])
