"""SynthShapes in the paper's regime (benchmarks/synthshapes/paper.py), the real-learning demo's plan and
explanation (benchmarks/synthshapes/demo.py, scripts/demo.sh) and the progress line: built, not trained."""
import json
import os
import subprocess
from pathlib import Path

import pytest
import yaml

from benchmarks.synthshapes import jobs as jobs_module
from benchmarks.synthshapes.benchmark import PLANS, REPO_ROOT
from benchmarks.synthshapes.jobs import Job, Progress
from benchmarks.synthshapes.paper import (HOST_OF, PAPER_CFG, PAPER_PLANS, RSM_OF, PaperBenchmark, PaperPlan,
                                          PaperRun, plan_runs)
from benchmarks.synthshapes.plots import two_panel_plot

TRAINERS = ("PromptKD", "PromptKD_RSM", "Simple", "Simple_RSM")


def _config(trainer: str, name: str) -> dict:
    return yaml.safe_load((REPO_ROOT / "configs" / "trainers" / trainer / f"{name}.yaml").read_text())


@pytest.mark.parametrize("trainer", TRAINERS)
def test_paper_configs_use_promptkds_own_optimisation_at_synthshapes_input_size(trainer):
    paper, promptkd = _config(trainer, PAPER_CFG), _config("PromptKD", "vit_b16_c2_ep20_batch8_4+4ctx")
    for key in ("NAME", "LR", "MAX_EPOCH", "LR_SCHEDULER", "WARMUP_EPOCH", "WARMUP_TYPE", "WARMUP_CONS_LR"):
        assert paper["OPTIM"][key] == promptkd["OPTIM"][key], key
    assert (paper["OPTIM"]["MOMENTUM"], float(paper["OPTIM"]["WEIGHT_DECAY"])) == (0.9, 5e-4)
    assert paper["DATALOADER"]["TRAIN_X"]["BATCH_SIZE"] == promptkd["DATALOADER"]["TRAIN_X"]["BATCH_SIZE"] == 8
    # Only the input size and the caches differ from the default SynthShapes student config.
    synth = _config("PromptKD", "synth_shapes")
    assert paper["INPUT"]["SIZE"] == synth["INPUT"]["SIZE"] and paper["MODEL"] == synth["MODEL"]
    assert paper["TRAINER"]["PROMPTKD"]["CACHE_TEACHER_FEATURES"] and paper["DATALOADER"]["CACHE_IMAGES"]
    assert ("RSM" in paper["TRAINER"]) == trainer.endswith("_RSM")
    if trainer.endswith("_RSM"):
        assert paper["TRAINER"]["RSM"]["WEIGHT"] == 50.0


def test_paper_plan_holds_the_papers_grid_once_each():
    runs = plan_runs(PAPER_PLANS["paper"])
    assert len(runs) == len(set(runs))
    cells = {(r.trainer, r.variant, r.shots, r.omega) for r in runs if r.rsm_variant is None}
    expected = set()
    for host in ("PromptKD", "Simple"):
        for variant, shots in [("noisy", s) for s in ("4", "16", "30", "full")] + [("textured", "16")]:
            expected |= {(host, variant, shots, None), (RSM_OF[host], variant, shots, 50.0)}
    expected |= {("PromptKD_RSM", "noisy", "16", w) for w in (1.0, 5.0, 10.0, 25.0, 100.0)}
    assert cells == expected
    variants = [r for r in runs if r.rsm_variant is not None]
    batches = [r for r in runs if r.batch_lr is not None]
    assert {r.seed for r in runs} == {1, 2, 3} and len(runs) == 3 * len(expected) + len(variants) + len(batches)
    # The large-batch rule: PromptKD at batch 64 with the linearly scaled LR and without scaling, every seed.
    assert {(r.trainer, r.shots, r.batch_lr) for r in batches} == {("PromptKD", "16", (64, 0.04)),
                                                                   ("PromptKD", "16", (64, 0.0141)),
                                                                   ("PromptKD", "16", (64, 0.005))}
    assert {r.tag for r in batches} == {"b64_lr0.04", "b64_lr0.0141", "b64_lr0.005"} and len(batches) == 9
    assert all("DATALOADER.TRAIN_X.BATCH_SIZE 64 OPTIM.LR" in r.extra_opts for r in batches)
    # The opt-in variants of the term: PromptKD_RSM at omega 50, 16 noisy shots, every seed, own folders.
    assert {(r.trainer, r.variant, r.shots, r.omega) for r in variants} == {("PromptKD_RSM", "noisy", "16", 50.0)}
    assert {r.rsm_variant[1] for r in variants} == {"SCORE_TEMPERATURE", "CLASS_ALIGNED"} and len(variants) == 6
    assert len({r.tag for r in variants} | {"w50"}) == 3
    assert all(f"TRAINER.RSM.{r.rsm_variant[1]} " in r.extra_opts for r in variants)
    # The main question (16 shots on the noisy data) comes first.
    assert {(r.shots, r.variant) for r in runs[:12]} == {("16", "noisy")}


def test_paper_quick_is_a_cut_of_paper():
    full, quick = plan_runs(PAPER_PLANS["paper"]), plan_runs(PAPER_PLANS["paper-quick"])
    assert set(quick) < set(full)
    assert {r.trainer for r in quick} == set(TRAINERS)
    assert any(r.omega == 50.0 for r in quick) and any(r.variant == "textured" for r in quick)


def test_benchmark_command_hands_paper_modes_to_the_paper_benchmark(monkeypatch):
    from benchmarks.synthshapes import benchmark, paper

    seen = []
    monkeypatch.setattr(paper, "main", lambda argv: seen.append(argv) or {})
    benchmark.main(["--paper-quick", "--cache", "C", "--seeds", "4"])
    benchmark.main(["--paper"])
    assert seen == [["--mode", "paper-quick", "--cache", "C", "--seeds", "4"], ["--mode", "paper"]]


def test_paper_mode_shares_the_default_modes_data_clips_teachers_and_zero_shot_runs(tmp_path):
    from benchmarks.synthshapes.benchmark import Benchmark

    weights = {"teacher": tmp_path / "teacher-a.pt", "student": tmp_path / "student-a.pt"}
    default = Benchmark(PLANS["full"], tmp_path / "cache", tmp_path / "full", log=lambda *_: None)
    paper = PaperBenchmark(PAPER_PLANS["paper"], tmp_path / "cache", tmp_path / "paper", log=lambda *_: None)
    default.weights, paper.weights = dict(weights), dict(weights)
    assert paper.data_root == default.data_root and paper.teacher_root == default.teacher_root
    assert paper.zeroshot_root("student") == default.zeroshot_root("student")
    assert paper._pretrain_checkpoints() == default._pretrain_checkpoints()
    assert set(paper.plan.variants) == set(default.plan.variants) == {"noisy", "textured"}


def _bench(tmp_path, plan: PaperPlan = PAPER_PLANS["paper"]) -> PaperBenchmark:
    bench = PaperBenchmark(plan, tmp_path / "cache", tmp_path / "out", base=PLANS["tiny"], log=lambda *_: None)
    bench.weights = {"teacher": tmp_path / "teacher-a.pt", "student": tmp_path / "student-a.pt"}
    bench.data_root.mkdir(parents=True)
    return bench


def _opts(argv: list[str]) -> dict:
    """train.py's trailing KEY VALUE config options (after the last --flag VALUE pair)."""
    last_flag = max(i for i, a in enumerate(argv) if a.startswith("--"))
    tail = argv[last_flag + 2:]
    return dict(zip(tail[::2], tail[1::2]))


def test_paper_jobs_are_the_protocols_base2new_runs_with_the_paper_configs(tmp_path):
    bench = _bench(tmp_path)
    jobs = bench.paper_jobs()
    runs = plan_runs(PAPER_PLANS["paper"])
    assert len(jobs) == len(runs)
    for run, job in zip(runs, jobs):
        argv = job.argv
        assert argv[argv.index("--config-file") + 1] == f"configs/trainers/{run.trainer}/{PAPER_CFG}.yaml"
        assert argv[argv.index("--trainer") + 1] == run.trainer
        assert argv[argv.index("--seed") + 1] == str(run.seed)
        opts = _opts(argv)
        assert opts["DATASET.NUM_SHOTS"] == ("0" if run.shots == "full" else run.shots)
        assert opts["MODEL.BACKBONE.WEIGHTS"] == str(tmp_path / "student-a.pt")
        assert opts["TRAINER.PROMPTKD.TEACHER_WEIGHTS"] == str(tmp_path / "teacher-a.pt")
        assert opts.get("TRAINER.RSM.WEIGHT") == (None if run.omega is None else str(run.omega))
        output_dir = Path(argv[argv.index("--output-dir") + 1])
        assert output_dir == bench.run_dir(run)
        assert f"shots_{run.shots}" in output_dir.parts and output_dir.name == f"seed{run.seed}"
        assert output_dir.parent.name == PAPER_CFG + (f"_{run.tag}" if run.tag else "")
        if run.batch_lr:
            assert opts["DATALOADER.TRAIN_X.BATCH_SIZE"] == "64" and output_dir.parent.name.endswith(run.tag)
        elif run.rsm_variant:
            assert output_dir.parent.name.endswith(f"_w50_{run.rsm_variant[0]}")
            assert opts[f"TRAINER.RSM.{run.rsm_variant[1]}"] == str(float(run.rsm_variant[2]))
        else:
            assert output_dir.parent.name == PAPER_CFG + (f"_w{run.omega:g}" if run.omega is not None else "")
        assert job.cost > 0
    # Full data costs more than 4 shots; a finished run is skipped.
    cost = {(r.shots, r.seed, r.trainer, r.omega, r.variant): j.cost for r, j in zip(runs, jobs)}
    assert cost[("full", 1, "PromptKD", None, "noisy")] > cost[("4", 1, "PromptKD", None, "noisy")]
    import train
    from dassl.config import config_hash

    done = bench.run_dir(runs[0])
    done.mkdir(parents=True)
    saved = config_hash(train.setup_cfg(train.build_parser().parse_args(jobs[0].argv)))
    (done / "results.json").write_text(json.dumps({"config_hash": saved}))
    assert len(bench.paper_jobs()) == len(runs) - 1


def _write_result(bench, run, base, new):
    folder = bench.run_dir(run)
    folder.mkdir(parents=True, exist_ok=True)
    entry = {"base": base, "new": new, "hm": 2 * base * new / (base + new)}
    (folder / "results.json").write_text(json.dumps({"best": entry, "last": entry}))


def test_paper_report_pairs_rsm_with_its_host_seed_by_seed(tmp_path, monkeypatch):
    plan = PaperPlan("t", seeds=(1, 2), shots=("16",), other_variants=(), hosts=("PromptKD",), omegas=(0.0, 50.0))
    bench = _bench(tmp_path, plan)
    monkeypatch.setattr(PaperBenchmark, "_extra_installed", lambda self: False)
    # Seed 2 is worse for both trainers: the unpaired std is large, the paired difference is exactly +2.
    for seed, level in ((1, 60.0), (2, 40.0)):
        _write_result(bench, PaperRun("PromptKD", "noisy", "16", seed), level, level)
        _write_result(bench, PaperRun("PromptKD_RSM", "noisy", "16", seed, 50.0), level + 2, level + 2)
    log = bench.run_dir(PaperRun("PromptKD_RSM", "noisy", "16", 1, 50.0)) / "log.txt"
    log.write_text("epoch [1/20] batch [20/40] time 0.1 (0.1) loss 3.0 (3.0) H 3.8000 (3.8) max_p 0.0300 (0.03)\n"
                   "epoch [20/20] batch [40/40] time 0.1 (0.1) loss 1.0 (1.0) H 0.0100 (1.0) max_p 0.9990 (0.5)\n")
    bench.report()
    paired = bench.summary["paired"][0]["best"]
    assert paired["seeds"] == [1, 2] and paired["hm"]["values"] == pytest.approx([2.0, 2.0])
    assert paired["hm"]["std"] == pytest.approx(0.0)
    host_row = bench.summary["table"][0]["best"]
    assert host_row["hm"]["mean"] == pytest.approx(50.0) and host_row["hm"]["std"] == pytest.approx(10.0)
    assert bench.summary["entropy"]["runs"]["50"][0]["first_iter_below_10pct"] == 800
    text = (tmp_path / "out" / "summary.md").read_text()
    assert "| PromptKD_RSM - PromptKD | +2.00 +- 0.00" in text
    assert (tmp_path / "out" / "entropy_curves.png").stat().st_size > 1000
    assert any("analysis/ skipped" in note for note in bench.summary["notes"])


def test_paper_report_pairs_each_rsm_variant_with_the_host_and_the_faithful_term(tmp_path, monkeypatch):
    variant = ("class_aligned", "CLASS_ALIGNED", 0.1)
    plan = PaperPlan("t", seeds=(1, 2), shots=("16",), other_variants=(), hosts=("PromptKD",), omegas=(0.0, 50.0),
                     variants=(variant,))
    bench = _bench(tmp_path, plan)
    monkeypatch.setattr(PaperBenchmark, "_extra_installed", lambda self: False)
    for seed, level in ((1, 60.0), (2, 40.0)):
        _write_result(bench, PaperRun("PromptKD", "noisy", "16", seed), level, level)
        _write_result(bench, PaperRun("PromptKD_RSM", "noisy", "16", seed, 50.0), level - 5, level - 5)
        _write_result(bench, PaperRun("PromptKD_RSM", "noisy", "16", seed, 50.0, variant), level + 1, level + 1)
    bench.report()
    row = bench.summary["variants"][0]
    assert row["key"] == "TRAINER.RSM.CLASS_ALIGNED" and row["best"]["hm"]["n"] == 2
    assert row["paired_vs_PromptKD"]["hm"]["values"] == pytest.approx([1.0, 1.0])
    assert row["paired_vs_faithful_RSM"]["hm"]["values"] == pytest.approx([6.0, 6.0])
    text = (tmp_path / "out" / "summary.md").read_text()
    assert "| TRAINER.RSM.CLASS_ALIGNED 0.1 | 51.00 +- 10.00 |" in text and "| +1.00 +- 0.00 | +6.00 +- 0.00 |" in text


def test_paper_report_pairs_the_large_batch_runs_with_batch_8(tmp_path, monkeypatch):
    plan = PaperPlan("t", seeds=(1, 2), shots=("16",), other_variants=(), hosts=("PromptKD",), omegas=(0.0,),
                     variants=(), batch_scaling=((64, 0.04),))
    bench = _bench(tmp_path, plan)
    monkeypatch.setattr(PaperBenchmark, "_extra_installed", lambda self: False)
    for seed, level in ((1, 60.0), (2, 40.0)):
        _write_result(bench, PaperRun("PromptKD", "noisy", "16", seed), level, level)
        _write_result(bench, PaperRun("PromptKD", "noisy", "16", seed, batch_lr=(64, 0.04)), level - 3, level - 3)
    bench.report()
    rows = bench.summary["batch_scaling"]
    assert [(r["batch"], r["lr"]) for r in rows] == [(8, 0.005), (64, 0.04)]
    assert rows[1]["paired_vs_batch8"]["hm"]["values"] == pytest.approx([-3.0, -3.0])
    assert "| 64 | 0.04 | 47.00 +- 10.00 |" in (tmp_path / "out" / "summary.md").read_text()


def test_hosts_and_rsm_versions_pair_up():
    assert {HOST_OF[rsm] for rsm in RSM_OF.values()} == set(RSM_OF)


def test_two_panel_plot_writes_one_png(tmp_path):
    series = [("omega 50", [1, 2, 3], [3.8, 2.0, 0.1], None)]
    two_panel_plot(tmp_path / "p.png", (series, series), "t", "iteration", ("H(M)", "max p"))
    assert (tmp_path / "p.png").stat().st_size > 1000 and len(list(tmp_path.iterdir())) == 1


def test_progress_line_estimates_the_time_left_from_the_cost_done(monkeypatch):
    clock = iter([100.0, 110.0, 130.0])
    monkeypatch.setattr(jobs_module.time, "time", lambda: next(clock))
    lines = []
    jobs = [Job("a", [], Path("a"), cost=1.0, returncode=0), Job("b", [], Path("b"), cost=3.0, returncode=0)]
    progress = Progress(jobs, lines.append)
    progress.finished(jobs[0])      # 10 s for 1 of 4 cost units: 30 s left
    progress.finished(jobs[1])
    assert lines[0].startswith("  [1/2] a: ok in 0s") and "elapsed 10s, about 30s left" in lines[0]
    assert "elapsed 30s, batch done" in lines[1]


# ----------------------------------------------------------------- the demo
def test_demo_default_plan_learns_from_an_empty_cache():
    demo = PLANS["demo"]
    assert demo.mode == "demo" and demo.student_steps > 0 and demo.teacher_steps > demo.student_steps
    assert demo.omegas == (0.0, 50.0) and len(demo.seeds) >= 2 and demo.teacher_reference_rows
    # The tiny plan (tests/test_benchmarks_synthshapes.py checks that it learns) with more seeds.
    assert (demo.counts, demo.num_classes, demo.student_epochs) == (PLANS["tiny"].counts, PLANS["tiny"].num_classes,
                                                                    PLANS["tiny"].student_epochs)


def _stub_python(tmp_path, code: int) -> dict:
    stub = tmp_path / "python"
    stub.write_text(f'#!/bin/sh\necho "$@" >> "{tmp_path}/calls"\nexit {code}\n')
    stub.chmod(0o755)
    return {**os.environ, "PYTHON": str(stub), "DEMO_DIR": str(tmp_path / "demo")}


def test_demo_script_runs_the_real_learning_demo_by_default_and_smoke_only_when_asked(tmp_path):
    env = _stub_python(tmp_path, 0)
    env.pop("DEMO_MODE", None)
    subprocess.run(["bash", "scripts/demo.sh"], cwd=REPO_ROOT, env=env, check=True, capture_output=True)
    assert (tmp_path / "calls").read_text().split() == ["-m", "benchmarks.synthshapes.demo"]
    (tmp_path / "calls").unlink()
    env = {**_stub_python(tmp_path, 1), "DEMO_MODE": "smoke"}   # the stub fails: the smoke run stops at step 1
    result = subprocess.run(["bash", "scripts/demo.sh"], cwd=REPO_ROOT, env=env, capture_output=True, text=True)
    assert result.returncode != 0 and "SMOKE RUN" in result.stdout
    assert (tmp_path / "calls").read_text().split()[0] == "tools/make_fake_dataset.py"


def test_demo_explanation_states_the_gain_over_zero_shot():
    from benchmarks.synthshapes.demo import explain

    def entry(hm, std=None):
        e = {"base": hm, "new": hm, "hm": hm}
        return e if std is None else {**e, "hm_std": std}

    summary = {"datasets": {"SynthShapes": {"student_zero_shot": entry(25.0), "teacher_tuned": entry(90.0),
                                            "PromptKD_best": entry(55.0, 1.0), "PromptKD_RSM_w50_best": entry(54.0, 2.0)}},
               "entropy": {"runs": {"50": [{"seed": 1, "first_H": 3.7, "last_H": 0.2, "last_max_p": 0.9}]}}}
    text = explain(summary, Path("out"))
    assert "+30.0 HM" in text and "beats its own zero-shot" in text and "3.70 -> 0.20" in text
    summary["datasets"]["SynthShapes"]["PromptKD_best"] = entry(20.0, 1.0)
    assert "did NOT beat" in explain(summary, Path("out"))
