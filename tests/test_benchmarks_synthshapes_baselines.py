"""The SynthShapes baseline table (benchmarks/synthshapes/baselines.py): its plan, each row's protocol run, its
configs, and the tiny pipeline end to end (two rows, random-weight CLIPs: it checks the plumbing, not learning)."""
import json
from pathlib import Path

import pytest
import torch
import yaml

from benchmarks.synthshapes.baselines import (BASELINE_CFG, BASELINE_PLANS, METHODS, BaselineBenchmark, BaselinePlan,
                                              BaselineRun, plan_runs, supervised_pattern)
from benchmarks.synthshapes.benchmark import REPO_ROOT
from benchmarks.synthshapes.tiny_clip import SPECS, init_state_dict

TABLE = ("CoOp", "CoCoOp", "IVLP", "MaPLe", "PromptSRC", "PromptKD", "PromptKD_RSM", "KDPL", "KDPL_RSM")
SUPERVISED = ("CoOp", "CoCoOp", "IVLP", "MaPLe", "PromptSRC")


def _config(trainer: str, name: str) -> dict:
    return yaml.safe_load((REPO_ROOT / "configs" / "trainers" / trainer / f"{name}.yaml").read_text())


def _opts(argv: list[str]) -> dict:
    """train.py's trailing KEY VALUE config options (after the last --flag VALUE pair)."""
    last_flag = max(i for i, a in enumerate(argv) if a.startswith("--"))
    tail = argv[last_flag + 2:]
    return dict(zip(tail[::2], tail[1::2]))


def _bench(tmp_path, plan: BaselinePlan = BASELINE_PLANS["baselines"]) -> BaselineBenchmark:
    bench = BaselineBenchmark(plan, tmp_path / "cache", tmp_path / "out", log=lambda *_: None)
    bench.weights = {"teacher": tmp_path / "teacher-a.pt", "student": tmp_path / "student-a.pt"}
    bench.data_root.mkdir(parents=True)
    return bench


def test_full_plan_is_the_nine_trained_methods_times_seeds_1_to_3_on_the_noisy_data():
    plan = BASELINE_PLANS["baselines"]
    runs = plan_runs(plan)
    assert (plan.variant, plan.base, plan.epochs) == ("noisy", "full", None)
    assert len(runs) == len(set(runs)) == 9 * 3
    assert {(r.method.trainer, r.seed) for r in runs} == {(t, s) for t in TABLE for s in (1, 2, 3)}
    # The first seed's whole row set comes first (a run stopped early already has one full table).
    assert {r.method.trainer for r in runs[:9]} == set(TABLE) and {r.seed for r in runs[:9]} == {1}


def _write_result(folder: Path, base: float, new: float) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    entry = {"base": base, "new": new, "hm": 2 * base * new / (base + new)}
    (folder / "results.json").write_text(json.dumps({"best": entry, "last": entry}))


def test_table_lists_the_ten_methods_with_mean_std_over_seeds(tmp_path):
    bench = _bench(tmp_path)
    _write_result(bench._zeroshot_dir(bench.output, bench._key("noisy"), "student"), 40.0, 50.0)
    for seed, level in ((1, 60.0), (2, 50.0), (3, 55.0)):
        _write_result(bench.run_dir(BaselineRun(METHODS["CoOp"], seed)), level, 45.0)
    bench.report()
    lines = [line for line in (tmp_path / "out" / "summary.md").read_text().splitlines() if line.startswith("| ")]
    methods = [line.split(" | ")[0][2:] for line in lines[1:]]   # lines[0]: the header
    assert methods == ["zero-shot CLIP", *TABLE[:6], "PromptKD_RSM (omega 50)", "KDPL", "KDPL_RSM (omega 5)"]
    coop = bench.summary["rows"][0]
    assert coop["best"]["base"]["mean"] == pytest.approx(55.0) and coop["best"]["base"]["n"] == 3
    assert coop["best"]["base"]["std"] == pytest.approx((50 / 3) ** 0.5)
    assert coop["minus_zero_shot"]["base"] == pytest.approx(15.0) and coop["pattern"] == "base up, new not"
    assert "| 55.00 +- 4.08 | 45.00 +- 0.00 |" in lines[2] and "+15.00 / -5.00 (base up, new not)" in lines[2]
    assert all(row["best"] is None for row in bench.summary["rows"][1:])
    assert lines[3].startswith("| CoCoOp |") and "| - | - | - | 0 | - |" in lines[3]


def test_each_row_runs_its_familys_protocol_on_the_student_clip(tmp_path):
    import train

    bench = _bench(tmp_path)
    jobs = bench.baseline_jobs()
    runs = plan_runs(bench.baseline)
    assert len(jobs) == len(runs)
    student, teacher = str(tmp_path / "student-a.pt"), str(tmp_path / "teacher-a.pt")
    for run, job in zip(runs, jobs):
        trainer, argv = run.method.trainer, job.argv
        cfg = BASELINE_CFG if trainer in ("CoOp", "PromptSRC") else "synth_shapes"
        assert argv[argv.index("--config-file") + 1] == f"configs/trainers/{trainer}/{cfg}.yaml"
        assert argv[argv.index("--trainer") + 1] == trainer and argv[argv.index("--seed") + 1] == str(run.seed)
        opts = _opts(argv)
        assert opts["MODEL.BACKBONE.WEIGHTS"] == student
        if trainer.startswith("PromptKD"):   # transductive: every unlabelled image, the cached prompt-tuned teacher
            assert (opts["DATASET.NUM_SHOTS"], opts["TRAINER.MODAL"]) == ("0", "base2novel")
            assert opts["TRAINER.PROMPTKD.TEACHER_WEIGHTS"] == teacher
            assert opts["TRAINER.PROMPTKD.TEACHER_ROOT"] == str(bench.teacher_root)
            assert "DATASET.SUBSAMPLE_CLASSES" not in opts
        else:                                # inductive: 16 shots of the base classes
            assert (opts["DATASET.NUM_SHOTS"], opts["DATASET.SUBSAMPLE_CLASSES"]) == ("16", "base")
            assert "TRAINER.MODAL" not in opts and "TRAINER.PROMPTKD.TEACHER_WEIGHTS" not in opts
            assert opts.get("TRAINER.KDPL.TEACHER_WEIGHTS") == (teacher if trainer.startswith("KDPL") else None)
        output_dir = Path(argv[argv.index("--output-dir") + 1])
        assert output_dir == bench.run_dir(run) and output_dir.parent.name == cfg
        assert job.cost > 0
        if run.seed == 1:
            cfg_node = train.setup_cfg(train.build_parser().parse_args(argv))
            assert cfg_node.MODEL.BACKBONE.NAME == "SynthShapes-student" and cfg_node.MODEL.BACKBONE.WEIGHTS == student
            assert tuple(cfg_node.INPUT.SIZE) == (32, 32) and list(cfg_node.INPUT.TRANSFORMS) == ["normalize"]
            assert cfg_node.DATALOADER.CACHE_IMAGES
    # CoCoOp runs the text tower once per image: its runs are expected to cost the most.
    cost = {r.method.trainer: j.cost for r, j in zip(runs, jobs)}
    assert max(cost, key=cost.get) == "CoCoOp" and cost["KDPL"] > cost["CoOp"]


@pytest.mark.parametrize("trainer", SUPERVISED)
def test_supervised_configs_share_one_optimisation_on_the_student(trainer):
    cfg = BASELINE_CFG if trainer in ("CoOp", "PromptSRC") else "synth_shapes"
    config, reference = _config(trainer, cfg), _config("IVLP", "synth_shapes")
    for block in ("OPTIM", "DATALOADER", "INPUT", "MODEL"):
        assert config[block] == reference[block], block
    assert config["MODEL"]["BACKBONE"]["NAME"] == _config("PromptKD", "synth_shapes")["MODEL"]["BACKBONE"]["NAME"]
    namespace = next(iter(config["TRAINER"].values()))
    assert namespace["PREC"] == "fp32"
    assert "FINAL_MODEL" not in config.get("TEST", {})    # the last epoch, as the published configs


def test_promptsrc_row_is_not_the_teacher_config():
    teacher, row = _config("PromptSRC", "synth_shapes"), _config("PromptSRC", BASELINE_CFG)
    assert teacher["MODEL"]["BACKBONE"]["NAME"] == "SynthShapes-teacher"
    assert row["MODEL"]["BACKBONE"]["NAME"] == "SynthShapes-student"
    assert row["TRAINER"]["PROMPTSRC"]["GPA_MEAN"] <= row["OPTIM"]["MAX_EPOCH"]


def test_supervised_pattern_names_the_direction_of_base_and_new():
    assert supervised_pattern({"base": 5.0, "new": -2.0}) == "base up, new not"
    assert supervised_pattern({"base": 5.0, "new": 0.0}) == "base up, new not"
    assert supervised_pattern({"base": 5.0, "new": 1.0}) == "base and new up"
    assert supervised_pattern({"base": -1.0, "new": 3.0}) == "base not up"


def test_benchmark_command_hands_baseline_modes_to_the_baseline_benchmark(monkeypatch):
    from benchmarks.synthshapes import baselines, benchmark

    seen = []
    monkeypatch.setattr(baselines, "main", lambda argv: seen.append(argv) or {})
    benchmark.main(["--baselines", "--cache", "C", "--seeds", "4"])
    benchmark.main(["--baselines-tiny"])
    assert seen == [["--mode", "baselines", "--cache", "C", "--seeds", "4"], ["--mode", "baselines-tiny"]]


def _random_clips_in_cache(bench: BaselineBenchmark) -> None:
    """Random-weight tiny CLIPs where the plan's pretraining would put them (so pretraining is skipped)."""
    for role, (_, final, _) in bench._pretrain_checkpoints().items():
        final.parent.mkdir(parents=True, exist_ok=True)
        torch.save(init_state_dict(SPECS[role], seed=3), final)
        final.with_suffix(".json").write_text(json.dumps({"zero_shot_acc": 0.0, "train_seconds": 0.0}))


def test_tiny_baselines_end_to_end_table_holds_the_runs_results(tmp_path):
    plan = BASELINE_PLANS["baselines-tiny"]
    plan = BaselinePlan("t", base=plan.base, variant=plan.variant, seeds=(1,), methods=("CoOp", "KDPL"), epochs=1)
    lines = []
    bench = BaselineBenchmark(plan, tmp_path / "cache", tmp_path / "out", workers=2, threads=1, log=lines.append)
    _random_clips_in_cache(bench)
    summary = bench.run()
    text = (tmp_path / "out" / "summary.md").read_text()
    saved = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert [row["trainer"] for row in saved["rows"]] == ["CoOp", "KDPL"]
    for row in saved["rows"]:
        run = BaselineRun(METHODS[row["trainer"]], 1)
        result = json.loads((bench.run_dir(run) / "results.json").read_text())
        assert result["trainer"] == row["trainer"] and result["protocol"] == "base2new"
        for metric in ("base", "new", "hm"):
            assert row["best"][metric]["values"] == [result["best"][metric]]
        cells = f"| {result['best']['base']:.2f} +- 0.00 | {result['best']['new']:.2f} +- 0.00 | " \
                f"{result['best']['hm']:.2f} +- 0.00 | 1 |"
        assert f"| {row['trainer']} | {METHODS[row['trainer']].protocol} {cells}" in text
    zero_shot = json.loads(next((tmp_path / "out" / "zeroshot").rglob("results.json")).read_text())["best"]
    assert saved["zero_shot"] == zero_shot
    assert f"| zero-shot CLIP | no training | {zero_shot['base']:.2f} | {zero_shot['new']:.2f} |" in text
    assert summary["rows"][0]["minus_zero_shot"]["base"] == pytest.approx(
        saved["rows"][0]["best"]["base"]["mean"] - zero_shot["base"])
    progress = [line for line in lines if "seed 1: ok" in line]
    assert len(progress) == 2 and progress[-1].startswith("  [2/2]") and "batch done" in progress[-1]
