"""The protocol scripts' command line: ``python -m scripts.launch <script> ARGS`` (scripts/<script>.sh run it
from the repository root).

It prints the script's usage on wrong arguments (exit 2), reads the environment into `runs.Settings`,
asks `scripts.runs` for the call's `RunSpec` (every check happens there: ``error: ...``, exit 2), then
carries it out: each train.py run in turn, stopping at the first failure (whose exit status it returns),
then the spec's finishing step. ``run_all`` makes one such call per dataset x seed x shots x trainer, each
in its own process, and prints the results table; ``run_all table1|table2`` makes the calls of the AME
paper's table rows (scripts/paper_tables.py) and writes the paper-versus-ours table (tools/paper_table.py).

The runs of one call go through ``train.cli(argv)`` inside this process, exactly as ``python train.py
ARGV`` would run them, so torch and the trainers are imported once per call (the KD-weight lookup needs
them too) rather than once more per run. A run with NPROC=N > 1 is started instead as ``python -m
torch.distributed.run --standalone --nproc_per_node N train.py ARGV`` in a child process (`train_command`).
"""
from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from typing import Callable, Mapping, Sequence

from scripts import paper_tables, runs
from scripts.runs import INDUCTIVE, PROTOCOLS, REPO_ROOT, TRAINERS, RunSpec, ScriptError, Settings, TrainRun

_SHARED_ENV = """\
  DATA          data root holding the dataset folders        [./data]
  TRAINER       PromptKD_RSM | PromptKD | Simple | Simple_RSM [PromptKD_RSM]
  SHOTS         unlabelled shots per class, or 'full'         [16]
  CFG           configs/trainers/<TRAINER>/<CFG>.yaml         [{cfg}]"""

_NPROC = """\
  NPROC         processes on this machine (torch.distributed.run when > 1); set, the run passes
                DATALOADER.SEEDED_AUGMENTATION True and its folder gets '_seededaug'; the batch
                DATALOADER.TRAIN_X.BATCH_SIZE is global and must divide by NPROC"""

_INDUCTIVE_TRAINERS = " | ".join(name for name, row in TRAINERS.items() if row.family == INDUCTIVE)
_INDUCTIVE_CFGS = "\n".join(f"                  {name}: {row.default_cfg('fewshot_train')}"
                            for name, row in TRAINERS.items() if row.family == INDUCTIVE)
_INDUCTIVE_ENV = f"""\
  DATA          data root holding the dataset folders        [./data]
  TRAINER       {_INDUCTIVE_TRAINERS}  [CoOp]
  CFG           configs/trainers/<TRAINER>/<CFG>.yaml; defaults:
{_INDUCTIVE_CFGS}"""

_TRANSFER = """\
usage: scripts/{name}.sh <dataset> <seed>
  e.g. bash scripts/{name}.sh {example} 1
  Evaluates (--eval-only, all classes) the ImageNet model of an inductive trainer, trained with
    SHOTS=16 TRAINER=<trainer> bash scripts/fewshot_train.sh imagenet <seed>
  (output/fewshot/imagenet/shots_<SHOTS>/<TRAINER>/<CFG>/seed<seed>) on <dataset>, one of:
    {targets}
environment overrides (defaults in brackets):
{env}
  SHOTS         the ImageNet run's shots                      [16]
  LOAD_EPOCH    evaluate model.pth.tar-<LOAD_EPOCH> instead of the last one the run saved
  OUTPUT_ROOT   where runs are written                        [output]
  EXTRA_OPTS    extra 'KEY VALUE' config pairs; RUN_TAG: run-folder suffix (the same as for the ImageNet run)
  OVERWRITE     set to 1 to evaluate again
An evaluation whose results.json exists is skipped."""

USAGES = {
    "base2new_train": f"""\
usage: scripts/base2new_train.sh <dataset> <seed>
  e.g. bash scripts/base2new_train.sh oxford_pets 1
  Distillation trainers (PromptKD, PromptKD_RSM, Simple, Simple_RSM): PromptKD's transductive protocol,
  unlabelled images, Base scored on TEST.SPLIT val and New on test in the run.
  Inductive trainers ({_INDUCTIVE_TRAINERS}): SHOTS shots of the base classes
  (labelled; KDPL: unlabelled), base and new test images scored in the run; no KD options.
environment overrides (defaults in brackets):
{_SHARED_ENV.format(cfg=PROTOCOLS["base2new_train"].cfg)}
                (inductive trainers: their own default, see scripts/fewshot_train.sh's usage)
  KD_WEIGHT     KD loss weight                                [PromptKD's per-dataset weight, trainers/config.py]
  TEACHER_ROOT  folder with <DATASET.NAME>/VLPromptLearner/   [the config default, teacher_model]
  OUTPUT_ROOT   where runs are written                        [output]
  EXTRA_OPTS    extra 'KEY VALUE' config pairs (no spaces inside values)
  RUN_TAG       suffix for the run folder (default: derived from EXTRA_OPTS)
{_NPROC}
A run whose results.json exists is skipped.""",
    "base2new_test": """\
usage: scripts/base2new_test.sh <dataset> <seed>
  Evaluates output/base2new/train_base/<dataset>/shots_<SHOTS>/<TRAINER>/<CFG>/seed<seed>:
  distillation trainers: Base = TEST.SPLIT val (base classes), New = TEST.SPLIT test (new classes);
  inductive trainers: DATASET.SUBSAMPLE_CLASSES base, then new, both on TEST.SPLIT test.
environment overrides: DATA, TRAINER, SHOTS, CFG, TEACHER_ROOT, OUTPUT_ROOT, EXTRA_OPTS, RUN_TAG,
  NPROC (the same values as for base2new_train.sh), and
  LOAD_EPOCH    evaluate model.pth.tar-<LOAD_EPOCH> instead of model-best.pth.tar (distillation)
                or of the last one the run saved (inductive trainers)""",
    "xd_train": f"""\
usage: scripts/xd_train.sh <dataset> <seed>
  e.g. bash scripts/xd_train.sh dtd 1                  (distillation: from the ImageNet-xd teacher, on a target)
       TRAINER=CoOp bash scripts/xd_train.sh imagenet 1  (supervised: once on ImageNet, all classes, SHOTS shots;
                                                          then xd_test.sh <target> / dg_test.sh <variant>)
environment overrides (defaults in brackets):
{_SHARED_ENV.format(cfg=PROTOCOLS["xd_train"].cfg)}
  KD_WEIGHT     KD loss weight                                [PromptKD's ImageNet weight, trainers/config.py]
  TEACHER_ROOT  folder holding ImageNet-xd/VLPromptLearner_large/  [the config default, teacher_model]
  OUTPUT_ROOT   where runs are written                        [output]
  EXTRA_OPTS    extra 'KEY VALUE' config pairs; RUN_TAG: run-folder suffix
{_NPROC}
A run whose results.json exists is skipped.""",
    "fewshot_train": f"""\
usage: scripts/fewshot_train.sh <dataset> <seed>
  e.g. SHOTS=4 TRAINER=CoOp bash scripts/fewshot_train.sh oxford_pets 1
  Trains an inductive trainer on SHOTS labelled shots (KDPL: unlabelled) of every class and scores the
  test split (results.json protocol fewshot). The paper grid is SHOTS 1 2 4 8 16 (run_all.sh fewshot).
  Trained on imagenet with SHOTS=16 it is the model xd_test.sh and dg_test.sh evaluate.
environment overrides (defaults in brackets):
{_INDUCTIVE_ENV}
  SHOTS         shots per class                               [16]
  OUTPUT_ROOT   where runs are written                        [output]
  EXTRA_OPTS    extra 'KEY VALUE' config pairs; RUN_TAG: run-folder suffix
{_NPROC}
A run whose results.json exists is skipped.""",
    "xd_test": _TRANSFER.format(name="xd_test", example="dtd", targets=" ".join(runs.CROSS_DATASET_TARGETS),
                                env=_INDUCTIVE_ENV),
    "dg_test": _TRANSFER.format(name="dg_test", example="imagenetv2", targets=" ".join(runs.DG_TARGETS),
                                env=_INDUCTIVE_ENV),
    "teacher_train": f"""\
usage: scripts/teacher_train.sh <dataset> <seed>
  e.g. bash scripts/teacher_train.sh oxford_pets 1
  Trains PromptSRC (ViT-L/14, 4+4 prompt tokens, depth 9) on the base classes with labels, then copies
  the final (Gaussian-aggregated) checkpoint to
    TEACHER_ROOT/<DATASET.NAME>/VLPromptLearner/model-best.pth.tar
  With XD=1 it trains the cross-dataset teacher on all classes (use imagenet) and installs it as
    TEACHER_ROOT/ImageNet-xd/VLPromptLearner_large/model.pth.tar-20
environment overrides (defaults in brackets):
  DATA          data root holding the dataset folders        [./data]
  SHOTS         labelled shots per class                      [16]
  CFG           configs/trainers/PromptSRC/<CFG>.yaml         [{PROTOCOLS["teacher_train"].cfg}]
  TEACHER_ROOT  where the teacher checkpoint is installed     [{runs.DEFAULT_TEACHER_ROOT}]
  OUTPUT_ROOT   where the training run is written             [output]
  OVERWRITE     set to 1 to replace an installed teacher
  EXTRA_OPTS    extra 'KEY VALUE' config pairs; RUN_TAG: run-folder suffix
{_NPROC}""",
    "zeroshot": """\
usage: scripts/zeroshot.sh <dataset> [cfg]
  cfg: configs/trainers/CoOp/<cfg>.yaml, one of vit_b16 (default), vit_b32 (ViT CLIPs only)
  e.g. bash scripts/zeroshot.sh oxford_pets vit_b16
environment overrides (defaults in brackets):
  DATA          data root holding the dataset folders   [./data]
  MODE          base2new: evaluate base and new classes and write results.json (Base / New / HM);
                all: one evaluation over all classes    [base2new]
  OUTPUT_ROOT   where runs are written                   [output]
  EXTRA_OPTS    extra 'KEY VALUE' config pairs (e.g. MODEL.BACKBONE.WEIGHTS path/to/ViT-B-16.pt)
A run whose results.json exists is skipped, and so is a part (base, new, all) whose zeroshot.json exists.""",
    "run_all": """\
usage: scripts/run_all.sh [base2new|xd|fewshot|xd_test|dg|table1|table2]
  base2new: base2new_train.sh   xd: xd_train.sh   fewshot: fewshot_train.sh
  xd_test: xd_test.sh (the ImageNet models of fewshot_train.sh imagenet)   dg: dg_test.sh
  table1, table2: every row of the AME paper's Table 1 (base-to-new) or Table 2 (cross-dataset) that this
    codebase trains (rows, scripts and configs: scripts/paper_tables.py), then one Markdown table of the
    paper's numbers (docs/ame_paper_tables.yaml) beside ours, written to OUTPUT_ROOT/paper_<table>.md
    (tools/paper_table.py); TRAINERS, SHOTS_LIST and CFG do not apply, the rows fix them
environment overrides (defaults in brackets):
  DATASETS      space-separated dataset keys   [the 11 base-to-new datasets; xd, xd_test, table2: the 10
                                                targets; dg: imagenetv2 imagenet_sketch imagenet_a imagenet_r]
  SEEDS         space-separated seeds          [1 2 3]
  SHOTS_LIST    space-separated shot settings  [16; fewshot: 1 2 4 8 16]
  TRAINERS      space-separated trainers       [PromptKD_RSM; fewshot, xd_test, dg: CoOp]
  DRY_RUN       set to 1 to print the script calls (table1, table2: as shell commands) instead of running them
  plus everything the protocol's script reads (DATA, CFG, TEACHER_ROOT, OUTPUT_ROOT, EXTRA_OPTS, NPROC, ...)""",
}
ARITY = {"base2new_train": (2, 2), "base2new_test": (2, 2), "xd_train": (2, 2), "fewshot_train": (2, 2),
         "xd_test": (2, 2), "dg_test": (2, 2), "teacher_train": (2, 2), "zeroshot": (1, 2)}
RUN_ALL_PROTOCOLS = {"base2new": "base2new_train", "xd": "xd_train", "fewshot": "fewshot_train",
                     "xd_test": "xd_test", "dg": "dg_test"}   # run_all.sh's argument -> protocol


class UsageError(Exception):
    """Wrong arguments for a script: its usage is printed (exit 2)."""


def say(line: str) -> None:
    """Progress for the user, flushed so that it comes before the output of the run it announces."""
    print(line, flush=True)


def run_train(argv: Sequence[str]) -> int:
    """One train.py run in this process, as ``python train.py ARGV``; its exit status."""
    import train   # the repository root is this process's working directory and first import path

    sys.argv = ["train.py", *argv]   # argparse's messages name train.py
    try:
        return train.cli(list(argv))
    except SystemExit as stop:   # argparse rejected the arguments
        return stop.code if isinstance(stop.code, int) else (0 if stop.code is None else 1)


def train_command(run: TrainRun) -> list[str] | None:
    """The command line of a run with several processes (NPROC > 1): torch's launcher on this machine,
    one process per device, the run's train.py arguments unchanged; None for a run in this process."""
    if run.nproc <= 1:
        return None
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(run.nproc),
            "train.py", *run.argv]


def run_distributed(command: Sequence[str]) -> int:
    """A multi-process run in a child process (from the repository root); its exit status."""
    return subprocess.call(list(command), cwd=REPO_ROOT)


def execute(spec: RunSpec, report: Callable[[str], None] = say) -> int:
    """Carry out a RunSpec; 0, or the exit status of the first failed train.py run."""
    for note in spec.notes:
        report(note)
    for run in spec.runs:
        report(run.message)
        command = train_command(run)
        code = run_train(run.argv) if command is None else run_distributed(command)
        if code:
            return code
    if spec.finish is not None:
        report(spec.finish())
    return 0


def build(script: str, args: Sequence[str], settings: Settings) -> RunSpec:
    """The RunSpec of `scripts/<script>.sh ARGS`; UsageError on a wrong argument count or -h/--help."""
    low, high = ARITY[script]
    if not low <= len(args) <= high or any(a in ("-h", "--help") for a in args):
        raise UsageError(script)
    return runs.BUILDERS[script](*args, settings=settings)


def run_protocol(script: str, args: Sequence[str], settings: Settings) -> int:
    """Check and run one protocol call; errors are printed as one `error:` line (exit status 2)."""
    try:
        return execute(build(script, args, settings))
    except ScriptError as error:
        print(f"error: {error}", file=sys.stderr, flush=True)
        return 2


def _listed(env: Mapping[str, str], variable: str, default: Sequence[str]) -> list[str]:
    """A space-separated list from the environment, or the default."""
    return (env.get(variable) or " ".join(default)).split()


def run_all(args: Sequence[str], env: Mapping[str, str]) -> int:
    """Every dataset x seed x shots x trainer of one protocol, each call in a fresh process with TRAINER and
    SHOTS set (resumable: finished runs are skipped; a failure is reported and the loop goes on), then the
    results table; 1 when any run failed. ``table1`` / ``table2``: the paper table's runs (`run_paper_table`).
    DRY_RUN=1 prints the calls instead."""
    if len(args) > 1 or (args and args[0] not in RUN_ALL_PROTOCOLS and args[0] not in paper_tables.TABLES):
        raise UsageError("run_all")
    name = args[0] if args else "base2new"
    if name in paper_tables.TABLES:
        return run_paper_table(name, env)
    protocol = PROTOCOLS[RUN_ALL_PROTOCOLS[name]]
    settings = Settings.from_env(env)
    dry_run = env.get("DRY_RUN") == "1"

    failed = []
    for trainer in _listed(env, "TRAINERS", [protocol.trainer]):
        # the trainer's own row of the protocol gives the default datasets (supervised xd: imagenet only)
        row = _trainer_row(protocol.name, settings, trainer) or protocol
        for shots in _listed(env, "SHOTS_LIST", protocol.shots_list):
            for dataset in _listed(env, "DATASETS", row.datasets or protocol.datasets):
                for seed in _listed(env, "SEEDS", ["1", "2", "3"]):
                    if dry_run:
                        say(f"TRAINER={trainer} SHOTS={shots} bash scripts/{protocol.name}.sh {dataset} {seed}")
                        continue
                    say(f"=== {name}: {trainer} {dataset} shots={shots} seed={seed}")
                    command = [sys.executable, "-m", "scripts.launch", protocol.name, dataset, seed]
                    if subprocess.call(command, cwd=REPO_ROOT, env={**env, "TRAINER": trainer, "SHOTS": shots}):
                        failed.append(f"{trainer} {dataset} shots={shots} seed={seed}")
    if dry_run:
        return 0
    say("")
    subprocess.call([sys.executable, "tools/parse_results.py", settings.output_root], cwd=REPO_ROOT)
    return _report_failures(failed)


def _trainer_row(script: str, settings: Settings, trainer: str):
    """The PROTOCOLS row `script` uses for `trainer` (None for an unknown trainer: its call reports it)."""
    try:
        return runs.protocol_for(script, replace(settings, trainer=trainer))
    except ScriptError:
        return None


def run_paper_table(table: str, env: Mapping[str, str]) -> int:
    """The runs of the paper table's rows (scripts/paper_tables.py), each script call in a fresh process
    (resumable as above), then tools/paper_table.py writes OUTPUT_ROOT/paper_<table>.md and prints it;
    1 when any run failed. DATASETS narrows the table's datasets, SEEDS sets the seeds."""
    datasets = _listed(env, "DATASETS", paper_tables.TABLE_DATASETS[table])
    seeds = _listed(env, "SEEDS", paper_tables.SEEDS)
    try:
        planned = paper_tables.plan(table, env, datasets, seeds)
    except ScriptError as error:
        print(f"error: {error}", file=sys.stderr, flush=True)
        return 2
    if env.get("DRY_RUN") == "1":
        for run in planned:
            say(run.command_line())
        return 0
    failed = []
    for run in planned:
        seed = f" seed={run.seed}" if run.seed is not None else ""
        say(f"=== {table}: {run.row.label}: {run.step.script} {run.dataset}{seed} "
            f"({' '.join(f'{k}={v}' for k, v in run.env.items())})")
        command = [sys.executable, "-m", "scripts.launch", run.step.script, *run.args]
        if subprocess.call(command, cwd=REPO_ROOT, env={**env, **run.env}):
            failed.append(run.command_line())
    say("")
    output_root = Settings.from_env(env).output_root
    subprocess.call([sys.executable, "tools/paper_table.py", output_root, "--table", table[-1], "--seeds", *seeds,
                     "--out", str(Path(output_root, f"paper_{table}.md"))], cwd=REPO_ROOT, env=dict(env))
    return _report_failures(failed)


def _report_failures(failed: Sequence[str]) -> int:
    """List the failed runs on stderr; 1 when there are any."""
    if failed:
        print(f"Failed runs ({len(failed)}); rerun this script to retry them:", file=sys.stderr)
        print("\n".join(f"  {line}" for line in failed), file=sys.stderr)
        return 1
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in USAGES:
        print(f"usage: python -m scripts.launch {{{'|'.join(USAGES)}}} ARGS", file=sys.stderr)
        return 2
    script, args = argv[0], argv[1:]
    try:
        if script == "run_all":
            return run_all(args, os.environ)
        return run_protocol(script, args, Settings.from_env())
    except UsageError as error:
        print(USAGES[str(error)], file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
