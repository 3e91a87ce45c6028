"""The SynthShapes baseline table: every method of the comparison on one dataset, same student CLIP, seeds 1-3.

    bash scripts/synth_benchmark.sh --baselines          the table below on SynthShapesNoisy (default mode's cache)
    bash scripts/synth_benchmark.sh --baselines-tiny     the same pipeline on the CI-sized tiny plan (seconds)

Rows (Base / New / HM, mean +- population std over seeds), each on the tiny *student* CLIP:
- zero-shot CLIP: the default mode's cached zero-shot run of the student (protocol zeroshot);
- the supervised prompt learners CoOp, CoCoOp, IVLP, MaPLe and PromptSRC: their inductive protocol
  (scripts/runs.py, family "inductive": 16 labelled shots of the base classes, base and new scored in the
  same run), configs/trainers/<Trainer>/synth_shapes.yaml, or synth_shapes_baseline.yaml for CoOp and
  PromptSRC, whose synth_shapes.yaml are the zero-shot and the teacher configs. PromptSRC's row is PromptSRC
  trained on the student CLIP, not the prompt-tuned teacher (that one is a reference row);
- the distillation trainers PromptKD and PromptKD_RSM: PromptKD's transductive protocol (the unlabelled
  training images of every class) from the cached prompt-tuned teacher, configs <Trainer>/synth_shapes.yaml,
  as in the default benchmark;
- KDPL and KDPL_RSM: their own protocol (unlabelled 16 shots of the base classes) with a zero-shot CLIP
  teacher, here the cached SynthShapes teacher CLIP's weights (TRAINER.KDPL.TEACHER_WEIGHTS).
Reference rows: the teacher CLIP zero-shot and prompt-tuned (what PromptKD distils from).

Each run is the one `scripts/base2new_train.sh` would start for that trainer (`scripts.runs.base2new_train`),
executed in the benchmark's warm worker pool, with a progress line per finished run. The data, pretrained
CLIPs, zero-shot runs and teachers are the default mode's (`PLANS["full"]`), from the same cache (pretrained
first when it is empty). Output: <output>/summary.md and summary.json (default output/synthshapes/baselines).
"""
from __future__ import annotations

import argparse
import json
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import yaml

from benchmarks.synthshapes.benchmark import (CFG, DATASET_NAMES, PLANS, REPO_ROOT, Benchmark, Plan, _hm, read_result,
                                              result_stats)
from benchmarks.synthshapes.cache import cache_dir, write_json_atomic
from benchmarks.synthshapes.jobs import Job
from dassl.data.datasets.base_dataset import num_base_classes
from dassl.run_files import RESULTS_FILENAME
from scripts.runs import DISTILLATION, PROTOCOLS, Settings, base2new_train, trainer_row

BASELINE_CFG = "synth_shapes_baseline"   # CoOp and PromptSRC: their synth_shapes.yaml key the cached runs
KDPL_TRAINERS = ("KDPL", "KDPL_RSM")


@dataclass(frozen=True)
class Method:
    """One row of the table: the trainer, its config under configs/trainers/<trainer>/ and its SHOTS."""
    trainer: str
    cfg: str = CFG
    shots: str = "16"

    @property
    def family(self) -> str:
        """distillation (PromptKD's transductive protocol), kdpl, or supervised (labelled, inductive)."""
        if trainer_row(self.trainer).family == DISTILLATION:
            return DISTILLATION
        return "kdpl" if self.trainer in KDPL_TRAINERS else "supervised"

    @property
    def protocol(self) -> str:
        """How the row was trained, in words (the table's protocol column)."""
        return {"supervised": f"inductive, {self.shots} labelled shots of the base classes",
                DISTILLATION: "transductive, unlabelled images of all classes, prompt-tuned teacher",
                "kdpl": f"unlabelled {self.shots} shots of the base classes, zero-shot teacher CLIP"}[self.family]


METHODS: dict[str, Method] = {m.trainer: m for m in (
    Method("CoOp", BASELINE_CFG),
    Method("CoCoOp"),
    Method("IVLP"),
    Method("MaPLe"),
    Method("PromptSRC", BASELINE_CFG),
    Method("PromptKD", shots="full"),        # as in the default benchmark: every unlabelled training image
    Method("PromptKD_RSM", shots="full"),
    Method("KDPL"),
    Method("KDPL_RSM"),
)}


# Seconds of a training step relative to CoOp's, measured on the tiny plan (batch 32, one thread, 2 shared cores):
# deep prompts cost more than CoOp's text context, PromptSRC also runs its frozen zero-shot image tower, KDPL
# its teacher's image tower at every step (PromptKD's teacher features are cached after the first epoch).
STEP_COST = {"CoOp": 1.0, "IVLP": 1.4, "MaPLe": 1.4, "PromptSRC": 2.0, "PromptKD": 1.7, "PromptKD_RSM": 1.7,
             "KDPL": 2.8, "KDPL_RSM": 2.8}


def image_cost(trainer: str, classes: int) -> float:
    """Relative cost of one image (CoOp = 1), for the time-left estimate only. CoCoOp runs the text tower over
    every class once per image: measured 0.8 CoOp steps per class (0.9 s against 0.06 s a step at 20 classes)."""
    if trainer == "CoCoOp":
        return 1.0 + 0.8 * classes
    return STEP_COST.get(trainer, 1.0)


@dataclass(frozen=True)
class BaselinePlan:
    """The runs of one baseline mode: methods x seeds on one dataset variant, on the `base` plan's cache."""
    mode: str
    base: str = "full"                    # the PLANS entry whose data, CLIPs, zero-shot runs and teachers are used
    variant: str = "noisy"
    seeds: tuple = (1, 2, 3)
    methods: tuple = tuple(METHODS)
    epochs: int | None = None             # None: each config's OPTIM.MAX_EPOCH (the tiny plan shortens them)


BASELINE_PLANS = {
    "baselines": BaselinePlan("baselines"),
    # CI-sized: the tiny plan's 10 clean classes and seconds-long CLIPs, 2 epochs per run; it checks that every
    # trainer runs end to end and writes results.json, not what the methods are worth.
    "baselines-tiny": BaselinePlan("baselines-tiny", base="tiny", variant="clean", seeds=(1,), epochs=2),
}


@dataclass(frozen=True)
class BaselineRun:
    """One run of the table: a method on the plan's dataset with one seed."""
    method: Method
    seed: int

    @property
    def name(self) -> str:
        return f"{self.method.trainer} seed {self.seed}"


def plan_runs(plan: BaselinePlan) -> list[BaselineRun]:
    """Every run of `plan`, seed by seed, so that a run stopped early has all methods for the first seeds."""
    return [BaselineRun(METHODS[name], seed) for seed in plan.seeds for name in plan.methods]


def supervised_pattern(minus_zero_shot: dict) -> str:
    """Which way a supervised prompt learner moved Base and New from the student's zero-shot.

    The known pattern of labelled prompt tuning (CoOp, CoCoOp, ... on real CLIPs) is "base up, new not": the
    prompts fit the base classes and lose, or at least do not gain, on the unseen ones.
    """
    base, new = minus_zero_shot["base"], minus_zero_shot["new"]
    if base <= 0:
        return "base not up"
    return "base up, new not" if new <= 0 else "base and new up"


class BaselineBenchmark(Benchmark):
    """The default benchmark's stages for data, CLIPs, zero-shot runs and teachers; the baselines' runs and report."""

    def __init__(self, baseline: BaselinePlan, cache: Path, output: Path, workers: int = 2, threads: int = 1,
                 log=print) -> None:
        base: Plan = PLANS[baseline.base]
        super().__init__(replace(base, mode=baseline.mode, variants=(baseline.variant,), seeds=baseline.seeds),
                         cache, output, workers, threads, log)
        self.baseline = baseline
        self.summary.update({"mode": baseline.mode, "baseline_plan": asdict(baseline)})

    # ----------------------------------------------------------------- runs
    def run_settings(self, run: BaselineRun) -> Settings:
        """The protocol settings of one run (its folder: <output>/base2new/train_base/<dataset>/shots_<S>/
        <trainer>/<cfg>/seed<N>): the student CLIP for every row, the teacher as each family takes it."""
        method = run.method
        extra = f"MODEL.BACKBONE.WEIGHTS {self.weights.get('student', '')}"
        if method.family == DISTILLATION:
            extra += f" TRAINER.PROMPTKD.TEACHER_WEIGHTS {self.weights.get('teacher', '')}"
        elif method.family == "kdpl":
            extra += f" TRAINER.KDPL.TEACHER_WEIGHTS {self.weights.get('teacher', '')}"
        if self.baseline.epochs:
            extra += f" OPTIM.MAX_EPOCH {self.baseline.epochs}"
        return Settings(data=str(self.data_root), trainer=method.trainer, shots=method.shots, cfg=method.cfg,
                        teacher_root=str(self.teacher_root), output_root=str(self.output), run_tag="",
                        extra_opts=extra)

    def run_dir(self, run: BaselineRun) -> Path:
        return Path(PROTOCOLS["base2new_train"].folder(self.run_settings(run), self._key(self.baseline.variant),
                                                       str(run.seed)))

    def _config(self, method: Method) -> dict:
        path = REPO_ROOT / "configs" / "trainers" / method.trainer / f"{method.cfg}.yaml"
        return yaml.safe_load(path.read_text())

    def run_cost(self, run: BaselineRun) -> float:
        """Expected work of a run (the unit of the time-left estimate): training images seen (epochs x images)
        plus a third of the final test's images (forward only), each weighted by `image_cost`."""
        method, plan, counts = run.method, self.plan, self.plan.counts
        epochs = self.baseline.epochs or self._config(method)["OPTIM"]["MAX_EPOCH"]
        base = num_base_classes(plan.num_classes)
        if method.family == DISTILLATION:
            train = plan.num_classes * counts["train"]
        else:
            shots = counts["train"] if method.shots in ("full", "all") else min(int(method.shots), counts["train"])
            train = base * shots
        test = plan.num_classes * counts["test"]
        return (epochs * train + test / 3) * image_cost(method.trainer, base)

    def baseline_jobs(self) -> list[Job]:
        """The train.py jobs of every run still to do (finished runs are skipped by the protocol)."""
        jobs = []
        key = self._key(self.baseline.variant)
        for run in plan_runs(self.baseline):
            spec = base2new_train(key, str(run.seed), self.run_settings(run))
            for job in self._train_jobs(spec, run.name, f"{run.method.trainer}_{key}_seed{run.seed}"):
                job.cost = self.run_cost(run)
                jobs.append(job)
        return jobs

    def students(self) -> None:
        jobs = self.baseline_jobs()
        self.log(f"  {len(jobs)} runs to do ({len(plan_runs(self.baseline)) - len(jobs)} already finished)")
        self._run_train(jobs)

    # ----------------------------------------------------------------- results
    def _stats(self, method: Method, which: str) -> dict | None:
        """Base / New / HM over the seeds of `method` that finished."""
        return result_stats([read_result(self.run_dir(BaselineRun(method, s)), which) for s in self.baseline.seeds])

    def _reference_rows(self) -> dict:
        """Zero-shot Base / New / HM of the student and teacher CLIPs, and the prompt-tuned teacher's."""
        key, rows = self._key(self.baseline.variant), {}
        for role in ("student", "teacher"):
            path = self._zeroshot_dir(self.output, key, role) / RESULTS_FILENAME
            if path.is_file():
                rows[f"{role}_zero_shot"] = json.loads(path.read_text())["best"]
        teacher_eval = self._teacher_run_dir(key) / "synth_teacher_eval.json"
        if teacher_eval.is_file():
            acc = json.loads(teacher_eval.read_text())
            rows["teacher_tuned"] = {**acc, "hm": _hm(acc["base"], acc["new"])}
        return rows

    def label(self, method: Method) -> str:
        """The row's name: the trainer, with the RSM weight its config sets for the RSM versions."""
        rsm = self._config(method).get("TRAINER", {}).get("RSM")
        return method.trainer if rsm is None else f"{method.trainer} (omega {rsm['WEIGHT']:g})"

    def report(self) -> None:
        s = self.summary
        reference = self._reference_rows()
        zero_shot = reference.get("student_zero_shot")
        rows = []
        for name in self.baseline.methods:
            method = METHODS[name]
            row = {"method": self.label(method), "trainer": method.trainer, "cfg": method.cfg, "shots": method.shots,
                   "family": method.family, "protocol": method.protocol,
                   "best": self._stats(method, "best"), "last": self._stats(method, "last")}
            if zero_shot and row["best"]:
                row["minus_zero_shot"] = {m: row["best"][m]["mean"] - zero_shot[m] for m in ("base", "new", "hm")}
                if method.family == "supervised":
                    row["pattern"] = supervised_pattern(row["minus_zero_shot"])
            rows.append(row)
        s.update({"dataset": DATASET_NAMES[self.baseline.variant], "zero_shot": zero_shot, "reference": reference,
                  "rows": rows})
        (self.output / "summary.md").write_text(self.markdown())
        write_json_atomic(self.output / "summary.json", s)
        self.log("\n" + self.markdown())

    # ----------------------------------------------------------------- markdown
    def markdown(self) -> str:
        s, b = self.summary, self.baseline

        def cell(st: dict | None, metric: str) -> str:
            return "-" if not st else f"{st[metric]['mean']:.2f} +- {st[metric]['std']:.2f}"

        def single(entry: dict, metric: str) -> str:
            return f"{entry[metric]:.2f}"

        lines = [f"# SynthShapes baselines ({b.mode}): {s.get('dataset', DATASET_NAMES[b.variant])}", "",
                 "Every row is trained and scored on the tiny student CLIP (32x32 synthetic world): what the methods "
                 "do in this toy setting, not real-CLIP accuracies. Final model of each run (results.json 'best': "
                 "the last epoch for the supervised learners and KDPL, best-on-base for PromptKD); mean +- "
                 f"population std over seeds {', '.join(map(str, b.seeds))}. The last column is each method's mean "
                 "minus the student's zero-shot (Base / New); for the supervised learners, which way they moved (the "
                 "known pattern of labelled prompt tuning is 'base up, new not').", "",
                 "| method | protocol | Base | New | HM | seeds | Base / New minus zero-shot |",
                 "|---|---|---|---|---|---|---|"]
        zero_shot = s.get("zero_shot")
        if zero_shot:
            lines.append(f"| zero-shot CLIP | no training | {single(zero_shot, 'base')} | {single(zero_shot, 'new')} | "
                         f"{single(zero_shot, 'hm')} | - | - |")
        for row in s.get("rows", []):
            st, diff = row["best"], row.get("minus_zero_shot")
            gain = "-" if not diff else f"{diff['base']:+.2f} / {diff['new']:+.2f}"
            if row.get("pattern"):
                gain += f" ({row['pattern']})"
            lines.append(f"| {row['method']} | {row['protocol']} | {cell(st, 'base')} | {cell(st, 'new')} | "
                         f"{cell(st, 'hm')} | {st['hm']['n'] if st else 0} | {gain} |")
        reference = {k: v for k, v in s.get("reference", {}).items() if k != "student_zero_shot"}
        if reference:
            labels = {"teacher_zero_shot": "teacher CLIP zero-shot",
                      "teacher_tuned": "teacher CLIP prompt-tuned (PromptSRC, seed 1; PromptKD's teacher)"}
            lines += ["", "Reference (the larger teacher CLIP, not a baseline):", "", "| | Base | New | HM |",
                      "|---|---|---|---|"]
            lines += [f"| {labels[k]} | {single(v, 'base')} | {single(v, 'new')} | {single(v, 'hm')} |"
                      for k, v in reference.items()]
        if s.get("timings"):
            lines += ["", "Timings (s): " + ", ".join(f"{k} {v:.0f}" for k, v in s["timings"].items())]
        return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description="SynthShapes baseline table (zero-shot, supervised prompt learners, "
                                                 "PromptKD, KDPL and their RSM versions).")
    parser.add_argument("--mode", choices=sorted(BASELINE_PLANS), default="baselines",
                        help="baselines | baselines-tiny")
    parser.add_argument("--cache", default=None, help="cache folder (default $AME_CACHE or ~/.cache/ame/synthshapes)")
    parser.add_argument("--output", default=None, help="where runs and the summary go (default output/synthshapes/<mode>)")
    parser.add_argument("--workers", type=int, default=2, help="commands run at once (default 2)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per command (default 1)")
    parser.add_argument("--seeds", type=int, nargs="+", default=None, help="seeds (override the mode's)")
    parser.add_argument("--methods", nargs="+", choices=list(METHODS), default=None,
                        help="only these rows (default: all)")
    args = parser.parse_args(argv)
    plan = BASELINE_PLANS[args.mode]
    if args.seeds:
        plan = replace(plan, seeds=tuple(args.seeds))
    if args.methods:
        plan = replace(plan, methods=tuple(args.methods))
    output = Path(args.output) if args.output else REPO_ROOT / "output" / "synthshapes" / args.mode
    return BaselineBenchmark(plan, cache_dir(args.cache), output.resolve(), workers=args.workers,
                             threads=args.threads).run()


if __name__ == "__main__":
    main()
