"""`run_all.sh table1|table2` (scripts/paper_tables.py over scripts/launch.py): exactly the paper rows'
runs are planned, each is one protocol script call whose run folder is the one the table writer reads,
finished runs are skipped by the script, and the table is written at the end."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from scripts import launch, paper_tables, runs
from scripts.paper_tables import Row, Step
from scripts.runs import BASE2NEW_DATASETS, CROSS_DATASET_TARGETS, Settings

REPO = Path(__file__).resolve().parents[1]
SEEDS = ("1", "2", "3")
B2N_KD = "vit_b16_c2_ep20_batch8_4+4ctx"
XD_KD = "vit_b16_c2_ep20_batch8_4+4ctx_cross_datasets"


def _expected_table1():
    """(script, TRAINER, SHOTS, CFG, MODE, dataset, seed) of every run of Table 1, written out by hand."""
    expected = {("zeroshot", "", "", "vit_b16", "base2new", d, "") for d in BASE2NEW_DATASETS}
    supervised = {"CoOp": "vit_b16_ctxv1", "MaPLe": "vit_b16_c2_ep5_batch4_2ctx",
                  "PromptSRC": "vit_b16_c2_ep20_batch4_4+4ctx"}
    for d in BASE2NEW_DATASETS:
        for s in SEEDS:
            for trainer, cfg in supervised.items():
                cfg = "vit_b16_ep50_ctxv1" if (trainer, d) == ("CoOp", "imagenet") else cfg
                expected.add(("base2new_train", trainer, "16", cfg, "", d, s))
            for trainer in ("PromptKD", "PromptKD_RSM"):
                expected.add(("base2new_train", trainer, "16", B2N_KD, "", d, s))
                full_cfg = "vit_b16_imagenet_fullshot_ep2_batch8" if d == "imagenet" else B2N_KD
                expected.add(("base2new_train", trainer, "full", full_cfg, "", d, s))
    return expected


def _expected_table2(targets=CROSS_DATASET_TARGETS, seeds=SEEDS):
    expected = {("zeroshot", "", "", "vit_b16", "all", d, "") for d in targets}
    transfer = {"CoOp": "vit_b16_ep50_ctxv1", "MaPLe": "vit_b16_c2_ep5_batch4_2ctx_cross_datasets",
                "PromptSRC": "vit_b16_c2_ep20_batch4_4+4ctx_cross_datasets"}
    for s in seeds:
        for trainer, cfg in transfer.items():
            expected.add(("fewshot_train", trainer, "16", cfg, "", "imagenet", s))
            expected.update(("xd_test", trainer, "16", cfg, "", d, s) for d in targets)
        for trainer in ("PromptKD", "PromptKD_RSM"):
            for shots in ("16", "full"):
                expected.update(("xd_train", trainer, shots, XD_KD, "", d, s) for d in targets)
    return expected


def _parse_dry_run(lines):
    """The dry run's shell lines as (script, TRAINER, SHOTS, CFG, MODE, dataset, seed)."""
    parsed = []
    for line in lines:
        words = line.split()
        at = words.index("bash")
        env = dict(word.split("=", 1) for word in words[:at])
        script = Path(words[at + 1]).stem
        args = words[at + 2:]
        if script == "zeroshot":
            parsed.append((script, "", "", args[1], env["MODE"], args[0], ""))
        else:
            parsed.append((script, env["TRAINER"], env["SHOTS"], env["CFG"], "", args[0], args[1]))
    return parsed


@pytest.mark.parametrize("table, expected", [("table1", _expected_table1()), ("table2", _expected_table2())])
def test_dry_run_plans_exactly_the_paper_rows(table, expected, capsys):
    assert launch.run_all([table], {"DRY_RUN": "1"}) == 0
    planned = _parse_dry_run(capsys.readouterr().out.splitlines())
    assert len(planned) == len(set(planned))        # no run twice
    assert set(planned) == expected
    assert len(planned) == (11 + 7 * 11 * 3 if table == "table1" else 10 + 3 * 3 * 11 + 4 * 10 * 3)


def test_run_all_script_dry_run_narrowed_by_datasets_and_seeds():
    env = {k: v for k, v in os.environ.items() if k not in {"RUN_TAG", "EXTRA_OPTS", "NPROC", "KD_WEIGHT"}}
    env.update(DRY_RUN="1", DATASETS="dtd", SEEDS="2")
    res = subprocess.run(["bash", str(REPO / "scripts" / "run_all.sh"), "table2"], capture_output=True, text=True,
                         env=env, cwd=REPO, timeout=60)
    assert res.returncode == 0, res.stderr
    assert set(_parse_dry_run(res.stdout.splitlines())) == _expected_table2(("dtd",), ("2",))
    assert "RUN_TAG=allclasses" in res.stdout   # zero-shot on all classes gets its own folder


def test_a_dataset_outside_the_table_is_refused(capsys):
    assert launch.run_all(["table2"], {"DATASETS": "imagenet", "DRY_RUN": "1"}) == 2
    assert "table2 has no dataset imagenet" in capsys.readouterr().err


def test_usage_lists_the_paper_tables():
    assert "table1" in launch.USAGES["run_all"] and "table2" in launch.USAGES["run_all"]
    with pytest.raises(launch.UsageError):
        launch.run_all(["table3"], {})


def test_run_all_table_runs_each_call_then_writes_the_table(tmp_path, monkeypatch):
    calls = []

    def fake_call(command, cwd=None, env=None):
        calls.append((command[1:], env))
        return 1 if command[-1] == "3" else 0   # every seed-3 run fails

    monkeypatch.setattr(launch.subprocess, "call", fake_call)
    env = {"DATASETS": "dtd", "OUTPUT_ROOT": str(tmp_path), "TRAINER": "ignored", "CFG": "ignored"}
    assert launch.run_all(["table2"], env) == 1
    started = [(command, called_env) for command, called_env in calls if command[:2] == ["-m", "scripts.launch"]]
    assert len(started) == len(_expected_table2(("dtd",)))
    coop = [called_env for command, called_env in started if command[2:] == ["xd_test", "dtd", "1"]
            and called_env["TRAINER"] == "CoOp"]
    assert len(coop) == 1 and coop[0]["CFG"] == "vit_b16_ep50_ctxv1" and coop[0]["SHOTS"] == "16"
    writer, writer_env = calls[-1]
    assert writer[:4] == ["tools/paper_table.py", str(tmp_path), "--table", "2"]
    assert writer[writer.index("--out") + 1] == str(tmp_path / "paper_table2.md")
    assert writer_env["OUTPUT_ROOT"] == str(tmp_path)


def _trained(folder, epoch=2, model="prompt_learner"):
    (folder / model).mkdir(parents=True)
    (folder / model / f"model.pth.tar-{epoch}").write_bytes(b"weights")
    (folder / model / "checkpoint").write_text(f"model.pth.tar-{epoch}\n")


@pytest.mark.parametrize("table", ["table1", "table2"])
def test_each_scored_run_writes_where_the_table_writer_reads(table, tmp_path):
    """The protocol function a planned call reaches puts its results.json in `result_folder`."""
    data = tmp_path / "data"
    for key in ("imagenet", "dtd"):
        (data / runs.DATASET_FOLDERS[key]).mkdir(parents=True)
    env = {"DATA": str(data), "OUTPUT_ROOT": str(tmp_path / "out"), "EXTRA_OPTS": "OPTIM.LR 0.1"}
    planned = paper_tables.plan(table, env, ["dtd"], ["1"])
    for run in planned:
        if run.step.script == "fewshot_train":   # the ImageNet source models the transfer tests load
            _trained(paper_tables.result_folder(run.step, run.dataset, run.seed, env))
    checked = 0
    for row in paper_tables.table_rows(table):
        for run in (r for r in planned if r.row == row and r.step == row.scored):
            settings = Settings.from_env({**env, **run.env})
            spec = runs.BUILDERS[run.step.script](*run.args, settings=settings)
            folders = {Path(train_run.output_dir) for train_run in spec.runs}
            expected = paper_tables.result_folder(run.step, run.dataset, run.seed, env)
            # zero-shot: results.json goes in the folder above its part folders
            assert (folders == {expected} if run.step.seeded else spec.output_dir == expected), run.command_line()
            assert "OPTIM.LR_0.1" in str(expected)   # the user's folder suffix is kept
            checked += 1
    assert checked == len(paper_tables.table_rows(table))


def test_zero_shot_runs_of_the_two_tables_never_share_a_folder():
    env = {"OUTPUT_ROOT": "out"}
    (table1,), (table2,) = (paper_tables.table_rows(t)[0].steps for t in ("table1", "table2"))
    assert paper_tables.result_folder(table1, "dtd", None, env) != paper_tables.result_folder(table2, "dtd", None, env)
    tagged = paper_tables.result_folder(table2, "dtd", None, {**env, "RUN_TAG": "mine"})
    assert tagged.name == "vit_b16_mine_allclasses"


def test_a_finished_run_is_skipped(tmp_path):
    """Resumable: the run folder of a planned call holding a finished run of the same config is skipped."""
    import train
    from dassl.config import config_hash
    from dassl.config.run_config import write_run_config

    (tmp_path / "data" / "imagenet").mkdir(parents=True)
    env = {"DATA": str(tmp_path / "data"), "OUTPUT_ROOT": str(tmp_path / "out")}
    (run,) = [r for r in paper_tables.plan("table1", env, ["imagenet"], ["1"]) if r.row.key == "PKD_RSM_full"]
    settings = Settings.from_env({**env, **run.env})
    spec = runs.base2new_train(*run.args, settings=settings)
    (train_run,) = spec.runs
    assert "configs/trainers/PromptKD_RSM/vit_b16_imagenet_fullshot_ep2_batch8.yaml" in train_run.argv
    cfg = train.setup_cfg(train.build_parser().parse_args(list(train_run.argv)))
    write_run_config(cfg, str(train_run.output_dir))
    (train_run.output_dir / "results.json").write_text(json.dumps({"config_hash": config_hash(cfg)}))
    again = runs.base2new_train(*run.args, settings=settings)
    assert again.done and "Skipping" in again.notes[0]


def test_a_row_that_cannot_be_trained_is_not_planned(monkeypatch):
    rows = (Row("CLIP", "CLIP", (Step("zeroshot", "ZeroshotCLIP", "vit_b16", mode="all"),)),
            Row("CoOp", "CoOp", not_run="no such config here"))
    monkeypatch.setitem(paper_tables.TABLES, "table2", rows)
    planned = paper_tables.plan("table2", {}, ["dtd", "eurosat"], ["1"])
    assert [(r.row.key, r.dataset) for r in planned] == [("CLIP", "dtd"), ("CLIP", "eurosat")]


def test_launch_help_names_the_tables():
    res = subprocess.run([sys.executable, "-m", "scripts.launch", "run_all", "-h"], capture_output=True, text=True,
                         cwd=REPO, timeout=60)
    assert res.returncode == 2 and "table1, table2" in res.stderr
