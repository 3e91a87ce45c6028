"""The protocol shell scripts: usage on bad arguments, early checks, skipping finished runs."""
import json
import os
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = ["base2new_train.sh", "base2new_test.sh", "xd_train.sh", "teacher_train.sh", "zeroshot.sh"]


def run_script(name, *args, env=None, cwd=None):
    full_env = {k: v for k, v in os.environ.items()
                if k not in {"DATA", "TRAINER", "SHOTS", "CFG", "TEACHER_ROOT", "OUTPUT_ROOT",
                             "EXTRA_OPTS", "RUN_TAG", "KD_WEIGHT", "MODE", "XD"}}
    full_env.update(env or {})
    return subprocess.run(["bash", str(REPO / "scripts" / name), *args], capture_output=True, text=True,
                          env=full_env, cwd=cwd or REPO, timeout=60)


@pytest.mark.parametrize("name", SCRIPTS)
def test_usage_on_missing_arguments(name):
    res = run_script(name)
    assert res.returncode == 2
    assert f"usage: scripts/{name}" in res.stderr


def test_bad_seed_and_unknown_dataset():
    res = run_script("base2new_train.sh", "oxford_pets", "one")
    assert res.returncode == 2 and "seed must be a non-negative integer" in res.stderr
    res = run_script("base2new_train.sh", "no_such_set", "1")
    assert res.returncode == 2 and "unknown dataset 'no_such_set'" in res.stderr
    assert "oxford_pets" in res.stderr  # lists the known keys


def test_missing_config_lists_alternatives():
    res = run_script("base2new_train.sh", "oxford_pets", "1", env={"CFG": "nope"})
    assert res.returncode == 2
    assert "configs/trainers/PromptKD_RSM/nope.yaml not found" in res.stderr
    assert "vit_b16_c2_ep20_batch8_4+4ctx" in res.stderr


def test_missing_data_root_is_named(tmp_path):
    missing = tmp_path / "no_data"
    res = run_script("base2new_train.sh", "oxford_pets", "1",
                     env={"DATA": str(missing), "OUTPUT_ROOT": str(tmp_path / "out")})
    assert res.returncode == 2
    assert f"data root '{missing}' does not exist" in res.stderr
    (missing).mkdir()
    res = run_script("xd_train.sh", "dtd", "1", env={"DATA": str(missing), "OUTPUT_ROOT": str(tmp_path)})
    assert res.returncode == 2 and f"'{missing}/dtd' for 'dtd' is missing" in res.stderr
    assert "Traceback" not in res.stderr


def test_existing_run_is_skipped(tmp_path):
    run_dir = (tmp_path / "base2new/train_base/oxford_pets/shots_16/PromptKD_RSM/"
               "vit_b16_c2_ep20_batch8_4+4ctx/seed3")
    run_dir.mkdir(parents=True)
    (run_dir / "results.json").write_text(json.dumps({"trainer": "PromptKD_RSM"}))
    # DATA does not exist: the skip must come before any data check or python launch
    res = run_script("base2new_train.sh", "oxford_pets", "3",
                     env={"OUTPUT_ROOT": str(tmp_path), "DATA": str(tmp_path / "nothing")})
    assert res.returncode == 0, res.stderr
    assert "Skipping: results already exist" in res.stdout
    # another variant (EXTRA_OPTS) lives in its own folder and is not skipped
    res = run_script("base2new_train.sh", "oxford_pets", "3",
                     env={"OUTPUT_ROOT": str(tmp_path), "DATA": str(tmp_path / "nothing"),
                          "EXTRA_OPTS": "TRAINER.RSM.WEIGHT 10.0"})
    assert res.returncode == 2 and "does not exist" in res.stderr


def test_odd_extra_opts_rejected(tmp_path):
    (tmp_path / "data" / "oxford_pets").mkdir(parents=True)
    res = run_script("base2new_train.sh", "oxford_pets", "1",
                     env={"OUTPUT_ROOT": str(tmp_path), "DATA": str(tmp_path / "data"),
                          "EXTRA_OPTS": "OPTIM.MAX_EPOCH"})
    assert res.returncode == 2 and "KEY VALUE pairs" in res.stderr


def test_run_all_rejects_unknown_protocol():
    res = run_script("run_all.sh", "fewshot")
    assert res.returncode == 2 and "usage: scripts/run_all.sh" in res.stderr


def test_base2new_script_end_to_end(tmp_path):
    """One real run through the script and train.py on a fake dataset with tiny weights."""
    from tests.trainers_tiny_setup import make_world
    from tools import parse_results

    world = make_world(tmp_path)
    student, teacher = world["weights"]
    env = {
        "DATA": world["root"], "OUTPUT_ROOT": str(tmp_path / "out"), "TEACHER_ROOT": world["teacher_root"],
        "TRAINER": "PromptKD_RSM", "RUN_TAG": "tiny",
        "EXTRA_OPTS": (f"MODEL.BACKBONE.WEIGHTS {student} TRAINER.PROMPTKD.TEACHER_WEIGHTS {teacher} "
                       "INPUT.SIZE (32,32) OPTIM.MAX_EPOCH 1 DATALOADER.NUM_WORKERS 0 "
                       "DATALOADER.TRAIN_X.BATCH_SIZE 4 TRAINER.PROMPTKD.PROMPT_DEPTH_VISION 2 "
                       "TRAINER.PROMPTKD.PROMPT_DEPTH_TEXT 2 TRAINER.RSM.DIM 8 USE_CUDA False"),
    }
    res = run_script("base2new_train.sh", "oxford_pets", "1", env=env)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    run_dir = (tmp_path / "out/base2new/train_base/oxford_pets/shots_16/PromptKD_RSM/"
               "vit_b16_c2_ep20_batch8_4+4ctx_tiny/seed1")
    record = json.loads((run_dir / "results.json").read_text())
    assert record["trainer"] == "PromptKD_RSM" and record["protocol"] == "base2novel"
    assert record["shots"] == 16 and record["seed"] == 1
    log = (run_dir / "log.txt").read_text()
    assert "'TRAINER.PROMPTKD.KD_WEIGHT', '1000.0'" in log  # oxford_pets default weight

    again = run_script("base2new_train.sh", "oxford_pets", "1", env=env)
    assert again.returncode == 0 and "Skipping" in again.stdout

    groups = parse_results.group_runs(parse_results.load_results(tmp_path / "out"))
    assert [g.key.config for g in groups] == ["vit_b16_c2_ep20_batch8_4+4ctx_tiny"]
