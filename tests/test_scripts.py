"""The protocol scripts (scripts/*.sh over scripts/launch.py and scripts/runs.py): usage on bad arguments,
early checks, run folders, the train.py arguments of each protocol, skipping finished runs."""
import json
import os
import subprocess
from dataclasses import replace
from pathlib import Path

import pytest

from scripts import launch, runs
from scripts.runs import RunSpec, ScriptError, Settings, TrainRun

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = ["base2new_train.sh", "base2new_test.sh", "xd_train.sh", "teacher_train.sh", "zeroshot.sh",
           "fewshot_train.sh", "xd_test.sh", "dg_test.sh"]


def run_script(name, *args, env=None, cwd=None):
    full_env = {k: v for k, v in os.environ.items()
                if k not in {"DATA", "TRAINER", "SHOTS", "CFG", "TEACHER_ROOT", "OUTPUT_ROOT",
                             "EXTRA_OPTS", "RUN_TAG", "KD_WEIGHT", "MODE", "XD", "NPROC", "OVERWRITE"}}
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
    (tmp_path / "data" / "oxford_pets").mkdir(parents=True)  # where the run found its data (not part of its identity)
    settings = Settings(data=str(tmp_path / "data"), output_root=str(tmp_path))
    write_finished_run(run_dir, runs.base2new_train("oxford_pets", "3", settings).runs[0].argv)
    # DATA does not exist: the skip must come before any data check
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
    res = run_script("run_all.sh", "nope")
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


# ----------------------------------------------------------------------------- scripts/runs.py (in-process)

def write_finished_run(run_dir, argv, *opts):
    """A results.json and config.yaml as train.py leaves them for the config ``argv`` (+ ``opts``) builds."""
    import train
    from dassl.config import config_hash
    from dassl.config.run_config import write_run_config

    cfg = train.setup_cfg(train.build_parser().parse_args([*argv, *opts]))
    write_run_config(cfg, str(run_dir))
    (run_dir / "results.json").write_text(json.dumps({"trainer": cfg.TRAINER.NAME, "config_hash": config_hash(cfg)}))


def test_base2new_train_argv_and_skipping_a_finished_run(tmp_path):
    (tmp_path / "data" / "oxford_pets").mkdir(parents=True)
    settings = Settings(data=str(tmp_path / "data"), output_root=str(tmp_path / "out"), trainer="PromptKD",
                        run_tag="t", extra_opts="OPTIM.MAX_EPOCH 1 INPUT.SIZE (32,32)")
    spec = runs.base2new_train("oxford_pets", "2", settings)
    run_dir = tmp_path / "out/base2new/train_base/oxford_pets/shots_16/PromptKD/vit_b16_c2_ep20_batch8_4+4ctx_t/seed2"
    assert [list(r.argv) for r in spec.runs] == [[
        "--root", str(tmp_path / "data"), "--seed", "2", "--trainer", "PromptKD",
        "--dataset-config-file", "configs/datasets/oxford_pets.yaml",
        "--config-file", "configs/trainers/PromptKD/vit_b16_c2_ep20_batch8_4+4ctx.yaml",
        "--output-dir", str(run_dir), "DATASET.NUM_SHOTS", "16", "TRAINER.MODAL", "base2novel",
        "TRAINER.PROMPTKD.TEMPERATURE", "1.0", "TRAINER.PROMPTKD.KD_WEIGHT", "1000.0",
        "OPTIM.MAX_EPOCH", "1", "INPUT.SIZE", "(32,32)"]]
    assert spec.output_dir == run_dir and spec.runs[0].message.startswith("Run: PromptKD on oxford_pets")
    assert not run_dir.exists()  # nothing was run

    run_dir.mkdir(parents=True)
    argv = spec.runs[0].argv
    write_finished_run(run_dir, argv)
    spec = runs.base2new_train("oxford_pets", "2", settings)
    assert spec.done and spec.runs == () and "Skipping" in spec.notes[0]

    # A finished run of another configuration in that folder is neither skipped nor resumed.
    write_finished_run(run_dir, argv, "OPTIM.LR", "0.5")
    with pytest.raises(ScriptError) as info:
        runs.base2new_train("oxford_pets", "2", settings)
    message = str(info.value)
    assert "another configuration: OPTIM.LR (finished run 0.5, now 0.005)" in message and "RUN_TAG" in message
    (run_dir / "config.yaml").unlink()  # an older run without its config: the hashes are named
    with pytest.raises(ScriptError, match="configuration hash"):
        runs.base2new_train("oxford_pets", "2", settings)


def test_kd_weight_set_by_hand_names_the_folder(tmp_path):
    (tmp_path / "oxford_pets").mkdir()
    settings = Settings(data=str(tmp_path), output_root=str(tmp_path / "out"), kd_weight="200.0")
    spec = runs.base2new_train("oxford_pets", "1", settings)
    assert spec.output_dir.parent.name == "vit_b16_c2_ep20_batch8_4+4ctx_kd200.0"
    tagged = runs.base2new_train("oxford_pets", "1", replace(settings, extra_opts="OPTIM.LR 0.01"))
    assert tagged.output_dir.parent.name == "vit_b16_c2_ep20_batch8_4+4ctx_kd200.0_OPTIM.LR_0.01"


def test_kd_weight_comes_from_the_python_table(tmp_path):
    from trainers.config import promptkd_kd_weight

    for key in ("dtd", "oxford_pets", "imagenet"):
        (tmp_path / runs.DATASET_FOLDERS[key]).mkdir()
    settings = Settings(data=str(tmp_path), output_root=str(tmp_path / "out"))

    def kd_weight(spec):
        argv = spec.runs[0].argv
        return argv[argv.index("TRAINER.PROMPTKD.KD_WEIGHT") + 1]

    dtd, pets = runs.base2new_train("dtd", "1", settings), runs.base2new_train("oxford_pets", "1", settings)
    assert runs.dataset_name("dtd") == "DescribableTextures"
    assert kd_weight(dtd) == str(promptkd_kd_weight("DescribableTextures"))
    assert kd_weight(pets) == str(promptkd_kd_weight("OxfordPets")) != kd_weight(dtd)
    assert f"KD_WEIGHT {kd_weight(dtd)} ->" in dtd.runs[0].message
    # cross-dataset: one weight for every target, ImageNet's; KD_WEIGHT overrides both
    assert kd_weight(runs.xd_train("dtd", "1", settings)) == str(promptkd_kd_weight("ImageNet"))
    assert kd_weight(runs.base2new_train("dtd", "1", replace(settings, kd_weight="5"))) == "5"


def _shell_run_tag(extra_opts):
    """The folder suffix as the earlier shell implementation computed it (echo | tr ... | cksum)."""
    script = ('tag="$(echo "$EXTRA_OPTS" | tr -s " " "_" | tr -cd "A-Za-z0-9_.+=-")"; '
              'if (( ${#tag} > 60 )); then tag="opts$(echo "$EXTRA_OPTS" | cksum | cut -d " " -f 1)"; fi; '
              'printf "_%s" "$tag"')
    return subprocess.run(["bash", "-c", script], env={**os.environ, "EXTRA_OPTS": extra_opts, "LC_ALL": "C"},
                          capture_output=True, text=True, check=True).stdout


@pytest.mark.parametrize("extra_opts", [
    "TRAINER.RSM.WEIGHT 10.0", "A  B\tC", "A__B C_ _D INPUT.SIZE (32,32)", "x=1 y=-2.5e+3 z/w",
    "MODEL.BACKBONE.WEIGHTS /x/y/student.pt TRAINER.PROMPTKD.TEACHER_WEIGHTS /x/y/teacher.pt OPTIM.MAX_EPOCH 2",
    "KEY " + "v" * 55, "KEY " + "v" * 56, "é ü OPTIM.LR 0.1"])
def test_run_tag_keeps_the_folder_names(extra_opts):
    assert runs.run_tag(Settings(extra_opts=extra_opts)) == _shell_run_tag(extra_opts)


def test_settings_from_the_environment():
    settings = Settings.from_env({"DATA": "", "SHOTS": "full", "RUN_TAG": "", "XD": "1", "OVERWRITE": "yes",
                                  "TRAINER": "PromptKD"})
    assert settings.data == "./data" and settings.shots == "full" and settings.trainer == "PromptKD"
    assert settings.run_tag == "" and settings.xd and not settings.overwrite  # only OVERWRITE=1 overwrites
    assert Settings.from_env({}) == Settings()


def test_run_tag_set_wins_even_empty():
    assert runs.run_tag(Settings(extra_opts="A 1", run_tag="")) == ""
    assert runs.run_tag(Settings(extra_opts="A 1", run_tag="demo")) == "_demo"
    assert runs.run_tag(Settings()) == ""


@pytest.mark.parametrize("size", [0, 1, 9, 255, 256, 70000])
def test_posix_cksum_matches_the_cksum_command(size):
    data = bytes((i * 7 + size) % 256 for i in range(size))
    expected = subprocess.run(["cksum"], input=data, capture_output=True, check=True).stdout.split()[0]
    assert runs.posix_cksum(data) == int(expected)


def test_zeroshot_skips_evaluated_parts(tmp_path):
    (tmp_path / "data" / "oxford_pets").mkdir(parents=True)
    settings = Settings(data=str(tmp_path / "data"), output_root=str(tmp_path / "out"))
    spec = runs.zeroshot("oxford_pets", "vit_b16", settings)
    argvs = [r.argv for r in spec.runs]
    assert [a[a.index("DATASET.SUBSAMPLE_CLASSES") + 1] for a in argvs] == ["base", "new"]
    assert "--seed" not in argvs[0] and spec.finish is not None
    base_dir = Path(argvs[0][argvs[0].index("--output-dir") + 1])
    base_dir.mkdir(parents=True)
    (base_dir / "zeroshot.json").write_text("{}")
    spec = runs.zeroshot("oxford_pets", "vit_b16", settings)
    assert [r.part for r in spec.runs] == ["new"] and "already evaluated" in spec.notes[0]
    all_classes = runs.zeroshot("oxford_pets", "vit_b16", replace(settings, mode="all"))
    assert [r.part for r in all_classes.runs] == ["all"]


def test_zeroshot_refuses_resnet_configs():
    res = run_script("zeroshot.sh", "oxford_pets", "rn50")
    assert res.returncode == 2 and "ResNet" in res.stderr and "vit_b16" in res.stderr
    assert "rn50" not in run_script("zeroshot.sh").stderr  # not offered in the usage text
    with pytest.raises(ScriptError, match="ResNet"):
        runs.zeroshot("oxford_pets", "RN101", Settings())


def _teacher_run(tmp_path, epoch=3):
    folder = tmp_path / "out/teacher/base2new/oxford_pets/shots_16/PromptSRC/vit_l14_c2_ep20_batch8_4+4ctx/seed1"
    checkpoints = folder / "VLPromptLearner"
    checkpoints.mkdir(parents=True)
    (checkpoints / f"model.pth.tar-{epoch}").write_bytes(b"weights of epoch %d" % epoch)
    (checkpoints / "checkpoint").write_text(f"model.pth.tar-{epoch}\n")
    return folder


def test_teacher_train_installs_the_last_checkpoint_once(tmp_path):
    (tmp_path / "data" / "oxford_pets").mkdir(parents=True)
    settings = Settings(data=str(tmp_path / "data"), output_root=str(tmp_path / "out"),
                        teacher_root=str(tmp_path / "teachers"), trainer="Simple")  # TRAINER is ignored
    fresh = runs.teacher_train("oxford_pets", "1", settings)
    assert len(fresh.runs) == 1 and "--trainer" in fresh.runs[0].argv
    assert fresh.runs[0].argv[fresh.runs[0].argv.index("--trainer") + 1] == "PromptSRC"
    assert fresh.runs[0].argv[-2:] == ("DATASET.SUBSAMPLE_CLASSES", "base")
    with pytest.raises(ScriptError, match="training wrote no checkpoint"):
        fresh.finish()

    _teacher_run(tmp_path)
    trained = runs.teacher_train("oxford_pets", "1", settings)
    assert trained.runs == ()  # trained already: only the install is left
    assert "Teacher installed" in trained.finish()
    installed = tmp_path / "teachers/OxfordPets/VLPromptLearner/model-best.pth.tar"
    assert installed.read_bytes() == b"weights of epoch 3"
    again = runs.teacher_train("oxford_pets", "1", settings)
    assert again.done and "already installed" in again.notes[0]
    assert not runs.teacher_train("oxford_pets", "1", replace(settings, overwrite=True)).done
    xd = runs.teacher_train("oxford_pets", "1", replace(settings, xd=True))
    assert "/teacher/xd/" in str(xd.output_dir) and xd.runs[0].argv[-1] == "all"


def test_teacher_test_evaluates_the_last_epoch_on_base_and_new(tmp_path):
    (tmp_path / "data" / "oxford_pets").mkdir(parents=True)
    folder = _teacher_run(tmp_path, epoch=7)
    settings = Settings(data=str(tmp_path / "data"), output_root=str(tmp_path / "out"))
    spec = runs.teacher_test("oxford_pets", "1", settings)
    assert [r.output_dir for r in spec.runs] == [folder / "eval_base", folder / "eval_new"]
    argv = spec.runs[1].argv
    assert argv[argv.index("--load-epoch") + 1] == "7" and argv[argv.index("--model-dir") + 1] == str(folder)
    assert argv[-2:] == ("DATASET.SUBSAMPLE_CLASSES", "new")


def test_base2new_test_evaluates_base_and_new(tmp_path):
    (tmp_path / "data" / "oxford_pets").mkdir(parents=True)
    settings = Settings(data=str(tmp_path / "data"), output_root=str(tmp_path / "out"), load_epoch="5")
    with pytest.raises(ScriptError, match="no trained run at .* scripts/base2new_train.sh oxford_pets 1"):
        runs.base2new_test("oxford_pets", "1", settings)
    trained = runs.base2new_train("oxford_pets", "1", settings).output_dir
    trained.mkdir(parents=True)
    spec = runs.base2new_test("oxford_pets", "1", settings)
    assert [r.argv[r.argv.index("TEST.SPLIT") + 1] for r in spec.runs] == ["val", "test"]
    assert all(r.argv[r.argv.index("--load-epoch") + 1] == "5" for r in spec.runs)
    assert [r.output_dir.parts[-6] for r in spec.runs] == ["test_base", "test_new"]


def test_execute_stops_at_the_first_failed_run(tmp_path, monkeypatch):
    commands = []

    def fake_train(argv):
        commands.append(list(argv))
        return int(argv[0])

    monkeypatch.setattr(launch, "run_train", fake_train)
    finished = []
    spec = RunSpec("x", "d", tmp_path, runs=(TrainRun(("0",), tmp_path, "first"), TrainRun(("3",), tmp_path, "second"),
                                             TrainRun(("0",), tmp_path, "third")),
                   finish=lambda: finished.append(1) or "done")
    lines = []
    assert launch.execute(spec, lines.append) == 3
    assert commands == [["0"], ["3"]] and lines == ["first", "second"] and not finished
    assert launch.execute(RunSpec("x", "d", tmp_path, runs=spec.runs[:1], finish=spec.finish), lines.append) == 0
    assert finished and lines[-1] == "done"


def test_run_all_goes_on_after_a_failure_and_lists_it(tmp_path):
    res = run_script("run_all.sh", "xd", env={"DATASETS": "no_such_set dtd", "SEEDS": "1", "OUTPUT_ROOT": str(tmp_path),
                                              "DATA": str(tmp_path / "none")})
    assert res.returncode == 1
    assert res.stdout.count("=== xd: PromptKD_RSM") == 2  # the second dataset ran after the first failed
    assert "unknown dataset 'no_such_set'" in res.stderr and "data root" in res.stderr
    assert "Failed runs (2)" in res.stderr and "PromptKD_RSM dtd shots=16 seed=1" in res.stderr


# ----------------------------------------------------------------------------- every trainer, every protocol

def _value(argv, key):
    return argv[argv.index(key) + 1]


def _trained(folder, epoch=5, model="prompt_learner"):
    """A run folder holding Dassl's checkpoint index and the last checkpoint it names."""
    (folder / model).mkdir(parents=True)
    (folder / model / f"model.pth.tar-{epoch}").write_bytes(b"weights")
    (folder / model / "checkpoint").write_text(f"model.pth.tar-{epoch}\n")


def _data(tmp_path, *keys):
    for key in keys:
        (tmp_path / "data" / runs.DATASET_FOLDERS[key]).mkdir(parents=True, exist_ok=True)
    return str(tmp_path / "data")


def test_inductive_base2new_train_argv(tmp_path):
    settings = Settings(data=_data(tmp_path, "oxford_pets"), output_root=str(tmp_path / "out"), trainer="CoOp",
                        shots="8", teacher_root="teachers", kd_weight="3")
    spec = runs.base2new_train("oxford_pets", "1", settings)
    run_dir = tmp_path / "out/base2new/train_base/oxford_pets/shots_8/CoOp/vit_b16_ctxv1_kd3/seed1"
    assert [list(r.argv) for r in spec.runs] == [[
        "--root", settings.data, "--seed", "1", "--trainer", "CoOp",
        "--dataset-config-file", "configs/datasets/oxford_pets.yaml",
        "--config-file", "configs/trainers/CoOp/vit_b16_ctxv1.yaml", "--output-dir", str(run_dir),
        "DATASET.NUM_SHOTS", "8", "DATASET.SUBSAMPLE_CLASSES", "base"]]  # no TRAINER.MODAL, KD weight, teacher
    assert spec.runs[0].message.startswith("Run: CoOp on oxford_pets (base classes)")
    run_dir.mkdir(parents=True)
    write_finished_run(run_dir, spec.runs[0].argv)  # train.py accepts the argv; the run is then skipped
    assert runs.base2new_train("oxford_pets", "1", settings).done


@pytest.mark.parametrize("trainer", sorted(runs.TRAINERS))
def test_every_trainer_has_a_base2new_row_and_config(tmp_path, trainer):
    settings = Settings(data=_data(tmp_path, "dtd"), output_root=str(tmp_path / "out"), trainer=trainer)
    argv = runs.base2new_train("dtd", "1", settings).runs[0].argv
    distillation = runs.TRAINERS[trainer].family == runs.DISTILLATION
    assert ("TRAINER.MODAL" in argv) == distillation
    assert ("DATASET.SUBSAMPLE_CLASSES" in argv) != distillation
    config = _value(argv, "--config-file")
    assert config.startswith(f"configs/trainers/{trainer}/") and (REPO / config).is_file()
    if trainer.startswith("KDPL"):  # the ViT-B/16 student on the CoOp host
        assert 'HOST: "CoOp"' in (REPO / config).read_text() and "vit_b16" in config


def test_inductive_base2new_test_scores_base_and_new_on_the_test_split(tmp_path):
    settings = Settings(data=_data(tmp_path, "oxford_pets"), output_root=str(tmp_path / "out"), trainer="MaPLe")
    with pytest.raises(ScriptError, match="TRAINER=MaPLe SHOTS=16 scripts/base2new_train.sh oxford_pets 1"):
        runs.base2new_test("oxford_pets", "1", settings)
    trained = runs.base2new_train("oxford_pets", "1", settings).output_dir
    trained.mkdir(parents=True)
    with pytest.raises(ScriptError, match="holds no checkpoint"):
        runs.base2new_test("oxford_pets", "1", settings)
    _trained(trained, epoch=5, model="MultiModalPromptLearner")
    spec = runs.base2new_test("oxford_pets", "1", settings)
    assert all(_value(r.argv, "--load-epoch") == "5" for r in spec.runs)  # the last epoch: no model-best
    assert _value(runs.base2new_test("oxford_pets", "1", replace(settings, load_epoch="2")).runs[0].argv,
                  "--load-epoch") == "2"
    assert [(_value(r.argv, "DATASET.SUBSAMPLE_CLASSES"), _value(r.argv, "TEST.SPLIT")) for r in spec.runs] == [
        ("base", "test"), ("new", "test")]
    assert all(_value(r.argv, "--model-dir") == str(trained) and "--eval-only" in r.argv for r in spec.runs)
    assert [r.output_dir.parts[-6] for r in spec.runs] == ["test_base", "test_new"]
    assert _value(spec.runs[0].argv, "--config-file") == "configs/trainers/MaPLe/vit_b16_c2_ep5_batch4_2ctx.yaml"


def test_trainer_family_errors():
    with pytest.raises(ScriptError, match="unknown TRAINER 'Nope'.*CoOp"):
        runs.base2new_train("dtd", "1", Settings(trainer="Nope"))
    with pytest.raises(ScriptError, match="xd_train.sh trains CoOp once, on imagenet .*xd_test.sh dtd"):
        runs.xd_train("dtd", "1", Settings(trainer="CoOp"))
    with pytest.raises(ScriptError, match="fewshot_train.sh does not run PromptKD .*CoOp"):
        runs.fewshot_train("dtd", "1", Settings(trainer="PromptKD"))


def test_fewshot_train_all_classes_and_skip(tmp_path):
    settings = Settings(data=_data(tmp_path, "dtd"), output_root=str(tmp_path / "out"), shots="4")
    spec = runs.fewshot_train("dtd", "2", settings)
    argv = spec.runs[0].argv
    assert spec.output_dir == tmp_path / "out/fewshot/dtd/shots_4/CoOp/vit_b16_ctxv1/seed2"
    assert argv[-4:] == ("DATASET.NUM_SHOTS", "4", "DATASET.SUBSAMPLE_CLASSES", "all")
    src = runs.fewshot_train("dtd", "2", replace(settings, trainer="PromptSRC")).runs[0].argv
    assert _value(src, "--config-file").endswith("PromptSRC/vit_b16_c2_ep50_batch4_4+4ctx_few_shot.yaml")
    spec.output_dir.mkdir(parents=True)
    write_finished_run(spec.output_dir, argv)
    assert runs.fewshot_train("dtd", "2", settings).done
    write_finished_run(spec.output_dir, argv, "OPTIM.MAX_EPOCH", "1")
    with pytest.raises(ScriptError, match="another configuration: OPTIM.MAX_EPOCH"):
        runs.fewshot_train("dtd", "2", settings)
    assert launch.RUN_ALL_PROTOCOLS["fewshot"] == "fewshot_train"
    assert runs.PROTOCOLS["fewshot_train"].shots_list == ("1", "2", "4", "8", "16")


@pytest.mark.parametrize("name, target, folder", [("xd_test", "dtd", "xd"), ("dg_test", "imagenet_sketch", "dg")])
def test_transfer_tests_evaluate_the_imagenet_model(tmp_path, name, target, folder):
    settings = Settings(data=_data(tmp_path, target), output_root=str(tmp_path / "out"), trainer="IVLP")
    build = runs.BUILDERS[name]
    with pytest.raises(ScriptError, match="no trained run at .*fewshot/imagenet/.*fewshot_train.sh imagenet 1"):
        build(target, "1", settings)
    model = tmp_path / "out/fewshot/imagenet/shots_16/IVLP/vit_b16_c2_ep20_batch4_4+4ctx/seed1"
    _trained(model, epoch=20, model="VLPromptLearner")
    assert _value(build(target, "1", settings).runs[0].argv, "--load-epoch") == "20"
    spec = build(target, "1", replace(settings, load_epoch="2"))
    (run,) = spec.runs
    assert run.output_dir == tmp_path / f"out/{folder}/test/{target}/shots_16/IVLP/vit_b16_c2_ep20_batch4_4+4ctx/seed1"
    assert _value(run.argv, "--model-dir") == str(model) and _value(run.argv, "--load-epoch") == "2"
    assert "--eval-only" in run.argv and _value(run.argv, "DATASET.SUBSAMPLE_CLASSES") == "all"
    assert _value(run.argv, "--dataset-config-file") == f"configs/datasets/{target}.yaml"
    run.output_dir.mkdir(parents=True)
    (run.output_dir / "results.json").write_text("{}")
    assert build(target, "1", settings).done
    assert not build(target, "1", replace(settings, overwrite=True)).done
    wrong = "imagenetv2" if name == "xd_test" else "dtd"
    with pytest.raises(ScriptError, match=f"{name}.sh evaluates on one of"):
        build(wrong, "1", settings)


def test_nproc_runs_the_launcher_with_seeded_augmentation(tmp_path, monkeypatch):
    settings = Settings(data=_data(tmp_path, "oxford_pets"), output_root=str(tmp_path / "out"), trainer="PromptKD",
                        nproc="2", extra_opts="OPTIM.MAX_EPOCH 1")
    (run,) = runs.base2new_train("oxford_pets", "1", settings).runs
    assert run.nproc == 2 and run.output_dir.parent.name == "vit_b16_c2_ep20_batch8_4+4ctx_seededaug_OPTIM.MAX_EPOCH_1"
    assert run.argv[-4:] == ("DATALOADER.SEEDED_AUGMENTATION", "True", "OPTIM.MAX_EPOCH", "1")
    command = launch.train_command(run)
    assert command[1:7] == ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "train.py"]
    assert command[7:] == list(run.argv)
    one = runs.fewshot_train("oxford_pets", "1", replace(settings, trainer="CoOp", nproc="1")).runs[0]
    assert one.nproc == 1 and launch.train_command(one) is None and "DATALOADER.SEEDED_AUGMENTATION" in one.argv
    plain = runs.base2new_train("oxford_pets", "1", replace(settings, nproc=None)).runs[0]
    assert "DATALOADER.SEEDED_AUGMENTATION" not in plain.argv and plain.nproc == 1
    for bad in ("0", "two"):
        with pytest.raises(ScriptError, match="NPROC must be a positive integer"):
            runs.base2new_train("oxford_pets", "1", replace(settings, nproc=bad))
    # the evaluation of that run finds its folder, and runs in this process
    run.output_dir.mkdir(parents=True)
    evaluations = runs.base2new_test("oxford_pets", "1", settings).runs
    assert {_value(r.argv, "--model-dir") for r in evaluations} == {str(run.output_dir)}
    assert all(r.nproc == 1 for r in evaluations)
    # execute: the multi-process run goes to the launcher, not into this process
    started = []
    monkeypatch.setattr(launch, "run_train", lambda argv: started.append(("in-process", list(argv))) or 0)
    monkeypatch.setattr(launch, "run_distributed", lambda command: started.append(("launcher", command)) or 0)
    assert launch.execute(RunSpec("x", "d", tmp_path, runs=(run, plain)), lambda line: None) == 0
    assert started == [("launcher", command), ("in-process", list(plain.argv))]
    # train.py accepts the argv (the seeded augmentation key exists)
    write_finished_run(run.output_dir, run.argv)


def test_nproc_setting_from_the_environment():
    assert Settings.from_env({"NPROC": "4"}).nproc == "4" and Settings.from_env({"NPROC": ""}).nproc is None


def test_run_all_fewshot_loops_over_the_shots(tmp_path, monkeypatch):
    calls = []

    def fake_call(command, cwd=None, env=None):
        calls.append((command[2:], env and (env["TRAINER"], env["SHOTS"])))
        return 0

    monkeypatch.setattr(launch.subprocess, "call", fake_call)
    assert launch.run_all(["fewshot"], {"DATASETS": "dtd", "SEEDS": "1", "OUTPUT_ROOT": str(tmp_path)}) == 0
    runs_started = [c for c in calls if c[0][:2] == ["scripts.launch", "fewshot_train"]]
    assert [env for _, env in runs_started] == [("CoOp", s) for s in ("1", "2", "4", "8", "16")]
    assert calls[-1][0] == [str(tmp_path)]  # then the results table
    calls.clear()
    assert launch.run_all(["dg"], {"SEEDS": "1", "TRAINERS": "MaPLe"}) == 0
    assert [c[0][2] for c in calls[:-1]] == list(runs.DG_TARGETS)


def test_coop_base2new_train_and_test_end_to_end(tmp_path):
    """CoOp through the protocol functions and train.py (in this process), then the results tables."""
    from tests.supervised_tiny_setup import tiny_world
    from tools import parse_results

    world = tiny_world(tmp_path)
    settings = Settings(data=world["root"], output_root=str(tmp_path / "out"), trainer="CoOp", shots="2",
                        run_tag="tiny", extra_opts=(
                            f"MODEL.BACKBONE.WEIGHTS {world['weights'][0]} INPUT.SIZE (32,32) OPTIM.MAX_EPOCH 1 "
                            "OPTIM.WARMUP_EPOCH -1 DATALOADER.NUM_WORKERS 0 DATALOADER.TRAIN_X.BATCH_SIZE 2 "
                            "DATALOADER.TEST.BATCH_SIZE 8 USE_CUDA False"))
    lines = []
    assert launch.execute(runs.base2new_train("oxford_pets", "1", settings), lines.append) == 0
    assert launch.execute(runs.base2new_test("oxford_pets", "1", settings), lines.append) == 0
    groups = parse_results.group_runs(parse_results.load_results(tmp_path / "out", strict=True))
    assert sorted((g.key.protocol, g.key.evaluated) for g in groups) == [
        ("base2new", ""), ("evaluation", "subsample base, split test"), ("evaluation", "subsample new, split test")]
    (trained,) = [g.runs[0] for g in groups if g.key.protocol == "base2new"]
    evaluated = {g.key.evaluated.split(",")[0]: g.runs[0]["best"]["accuracy"] for g in groups if g.key.evaluated}
    # the evaluations of the final model reproduce the scores the training run recorded for it
    assert evaluated == {"subsample base": pytest.approx(trained["last"]["base"]),
                         "subsample new": pytest.approx(trained["last"]["new"])}
    assert runs.base2new_train("oxford_pets", "1", settings).done


def test_full_shot_imagenet_distillation_gets_the_paper_preset(tmp_path):
    """ImageNet with SHOTS full trains the paper's 2-epoch preset unless CFG is set; other cells keep theirs."""
    for key in ("imagenet", "dtd"):
        (tmp_path / runs.DATASET_FOLDERS[key]).mkdir()
    settings = Settings(data=str(tmp_path), output_root=str(tmp_path / "out"), shots="full", trainer="PromptKD")
    spec = runs.base2new_train("imagenet", "1", settings)
    assert spec.output_dir.parent.name == runs.IMAGENET_FULL_SHOT_CFG
    argv = spec.runs[0].argv
    assert argv[argv.index("--config-file") + 1].endswith(f"PromptKD/{runs.IMAGENET_FULL_SHOT_CFG}.yaml")
    assert runs.base2new_train("dtd", "1", settings).output_dir.parent.name == "vit_b16_c2_ep20_batch8_4+4ctx"
    sixteen = replace(settings, shots="16")
    assert runs.base2new_train("imagenet", "1", sixteen).output_dir.parent.name == "vit_b16_c2_ep20_batch8_4+4ctx"
    chosen = replace(settings, cfg="vit_b16_imagenet_fullshot_ep2_batch128")
    assert runs.base2new_train("imagenet", "1", chosen).output_dir.parent.name == chosen.cfg
    # Simple has no such preset file: it keeps its default
    simple = replace(settings, trainer="Simple")
    assert runs.base2new_train("imagenet", "1", simple).output_dir.parent.name == "vit_b16_c2_ep20_batch8_4+4ctx"
    # base2new_test finds the preset-trained model by default
    spec.output_dir.mkdir(parents=True)
    test = runs.base2new_test("imagenet", "1", settings)
    assert test.output_dir == spec.output_dir


def test_supervised_xd_train_is_the_imagenet_source_run_that_xd_test_evaluates(tmp_path):
    settings = Settings(data=_data(tmp_path, "imagenet"), output_root=str(tmp_path / "out"), trainer="PromptSRC")
    spec = runs.xd_train("imagenet", "1", settings)
    fewshot = runs.fewshot_train("imagenet", "1", settings)
    assert spec.output_dir == fewshot.output_dir            # one run, one folder
    assert spec.runs[0].argv == fewshot.runs[0].argv
    assert _value(spec.runs[0].argv, "DATASET.SUBSAMPLE_CLASSES") == "all"
    assert _value(spec.runs[0].argv, "DATASET.NUM_SHOTS") == "16"
    # xd_test finds it by default (same CFG: the trainer's few-shot one)
    spec.output_dir.mkdir(parents=True)
    (spec.output_dir / "VLPromptLearner").mkdir()
    (spec.output_dir / "VLPromptLearner" / "checkpoint").write_text("model.pth.tar-50\n")
    (spec.output_dir / "VLPromptLearner" / "model.pth.tar-50").write_bytes(b"")
    (tmp_path / runs.DATASET_FOLDERS["dtd"]).mkdir()
    test = runs.xd_test("dtd", "1", replace(settings, data=str(tmp_path)))
    assert _value(test.runs[0].argv, "--model-dir") == str(spec.output_dir)
