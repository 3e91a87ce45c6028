"""The SynthShapes benchmark: the whole PromptKD / AME setting in miniature, on CPU, in one command.

    python -m benchmarks.synthshapes.benchmark [--quick | --mode M | --paper[-quick] | --baselines[-tiny]] [--cache DIR] [--output DIR]
    bash scripts/synth_benchmark.sh [--quick | --paper | --paper-quick | --baselines | --baselines-tiny]

(--paper / --paper-quick: the AME paper's training regime on this mode's cache, benchmarks/synthshapes/paper.py;
--baselines: the table of every baseline on SynthShapesNoisy on this mode's cache, benchmarks/synthshapes/baselines.py;
--mode demo: the plan of scripts/demo.sh's real-learning run; benchmarks/synthshapes/demo.py runs it and says
what its numbers mean.)

Stages (everything expensive is cached and reused; a rerun skips finished runs):
 1. render the downstream datasets (noisy, textured) in the CoOp layout       -> <cache>/data-<key>/
 2. contrastively pretrain the tiny teacher and student CLIPs                  -> <cache>/{teacher,student}-<key>.pt
 3. zero-shot Base/New of both CLIPs (protocol zeroshot, ZeroshotCLIP)         -> <cache>/zeroshot/<key>/, copied to <output>/zeroshot/
 4. prompt-tune the teacher per dataset (protocol teacher_train, PromptSRC), installed in PromptKD's
    layout, and evaluate it on base and new classes (teacher_test)             -> <cache>/teachers/<key>/
 5. PromptKD and PromptKD_RSM (omega 50) for every seed on every dataset, plus an omega sweep on one
    dataset and the best omega on the others (protocol base2new_train)         -> <output>/base2new/
 6. the Base / New / HM table (tools/parse_results.py), HM against omega, H(M) over training,
    summary.json / summary.md                                                  -> <output>/

Every train.py run is the one the project's protocol scripts would start: the benchmark asks the same
protocol functions (scripts/runs.py: run folders, skip-if-done, train.py arguments) and runs their argv
in a few long-lived worker processes (benchmarks/synthshapes/jobs.py, `TrainPool`), kept for the whole
benchmark, so that start-up is paid once per worker and runs on one dataset share the process-wide
teacher-feature and image caches. Per-run logs go to <output>/logs/.
"""
from __future__ import annotations

import argparse
import json
import math
import re
import shutil
import statistics
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import yaml

from benchmarks.synthshapes.cache import cache_dir, config_key, write_json_atomic
from benchmarks.synthshapes.dataset_writer import DEFAULT_COUNTS, NUM_CLASSES, data_key, dataset_dir_name, write_dataset
from benchmarks.synthshapes.jobs import Job, TrainPool, run_jobs, run_train_jobs
from benchmarks.synthshapes.plots import line_plot, read_entropy_curve, write_csv
from benchmarks.synthshapes.pretrain import DEFAULT_STEPS, PretrainSettings, bf16_is_fast, checkpoint_paths
from dassl.run_files import RESULTS_FILENAME
from scripts.runs import PROTOCOLS, RunSpec, Settings, base2new_train, teacher_test, teacher_train, zeroshot

REPO_ROOT = Path(__file__).resolve().parents[2]
CFG = "synth_shapes"                 # configs/trainers/<Trainer>/synth_shapes.yaml for every trainer
DATASET_NAMES = {"clean": "SynthShapes", "noisy": "SynthShapesNoisy", "textured": "SynthShapesTextured"}
TEACHER_SEED = 1                     # one cached teacher per dataset; students vary their seed
# Teacher pretraining steps done while the student pretrains beside it, one thread each (measured on 2 AVX2
# cores: 171 teacher steps during the student's 600).
TEACHER_STEPS_PER_STUDENT_STEP = 0.285


@dataclass
class Plan:
    """What one benchmark mode runs."""
    mode: str
    teacher_steps: int = DEFAULT_STEPS["teacher"]
    student_steps: int = DEFAULT_STEPS["student"]
    pretrain_batch: int = 256
    variants: tuple = ("noisy", "textured")
    seeds: tuple = (1, 2, 3)
    omegas: tuple = (0.0, 1.0, 5.0, 10.0, 25.0, 50.0, 100.0)
    sweep_variant: str = "noisy"
    main_omega: float = 50.0
    counts: dict = field(default_factory=lambda: dict(DEFAULT_COUNTS))
    num_classes: int = NUM_CLASSES
    teacher_epochs: int | None = None    # None: the value in configs/trainers/PromptSRC/synth_shapes.yaml
    student_epochs: int | None = None    # None: the value in configs/trainers/PromptKD*/synth_shapes.yaml
    student_lr: float | None = None      # None: likewise
    teacher_reference_rows: bool = True  # also report the teacher's zero-shot and prompt-tuned Base/New/HM


PLANS = {
    "full": Plan("full"),
    "quick": Plan("quick", teacher_steps=250, student_steps=300, seeds=(1,), omegas=(0.0, 50.0),
                  teacher_epochs=6, teacher_reference_rows=False),
    # The same on the full mode's cached CLIPs and teacher, one dataset, 2 seeds (needs that cache).
    "demo-full": Plan("demo-full", variants=("noisy",), seeds=(1, 2), omegas=(0.0, 50.0)),
    # CI-sized (tests/test_benchmarks_synthshapes.py): 10 classes, a handful of images, seconds of pretraining. The
    # student is barely pretrained on purpose (its zero-shot is near chance), so a distilled student
    # that beats its zero-shot HM shows that the teacher's knowledge really reached it.
    "tiny": Plan("tiny", teacher_steps=50, student_steps=5, pretrain_batch=64, variants=("clean",),
                 sweep_variant="clean", seeds=(1,), omegas=(0.0, 50.0),
                 counts={"train": 24, "val": 4, "test": 20}, num_classes=10, teacher_epochs=6, student_epochs=6,
                 student_lr=0.005, teacher_reference_rows=False),
}
# scripts/demo.sh's default (benchmarks/synthshapes/demo.py): the tiny plan from an empty cache, two seeds, and the
# teacher's own zero-shot and prompt-tuned accuracy as the ceiling the student is distilled towards.
PLANS["demo"] = replace(PLANS["tiny"], mode="demo", seeds=(1, 2), teacher_reference_rows=True)


def _fmt_omega(omega: float) -> str:
    return f"{omega:g}"


class Benchmark:
    """Runs a `Plan`; each stage is a method, results accumulate in `self.summary`."""

    def __init__(self, plan: Plan, cache: Path, output: Path, workers: int = 2, threads: int = 1,
                 log=print):
        self.plan, self.cache, self.output, self.log = plan, cache, output, log
        self.workers, self.threads = workers, threads
        self.summary: dict = {"mode": plan.mode, "plan": asdict(plan), "timings": {}}
        self.data_root = cache / f"data-{config_key(data_key(plan.counts, plan.num_classes))}"
        self.weights: dict[str, Path] = {}
        self.pool: TrainPool | None = None   # warm train.py workers while `run` is in progress

    # ----------------------------------------------------------------- helpers
    def _stage(self, name: str, fn) -> None:
        self.log(f"\n=== {name} ===")
        start = time.time()
        fn()
        self.summary["timings"][name] = round(time.time() - start, 1)
        self.log(f"=== {name}: {self.summary['timings'][name]:.0f}s ===")

    def _run(self, jobs: list[Job]) -> None:
        run_jobs(jobs, self.workers, self.threads, REPO_ROOT, self.log)

    def _run_train(self, jobs: list[Job]) -> None:
        """train.py jobs (from `_train_jobs`) in the benchmark's warm workers (or a pool of their own)."""
        if self.pool is not None:
            self.pool.run(jobs)
        else:
            run_train_jobs(jobs, self.workers, self.threads, REPO_ROOT, self.log)

    @staticmethod
    def _key(variant: str) -> str:
        return dataset_dir_name(variant)   # configs/datasets/<key>.yaml has the same stem as the folder

    def _train_jobs(self, spec: RunSpec, name: str, log_name: str) -> list[Job]:
        """The train.py runs of a protocol call (`scripts.runs`), as jobs for `_run_train`.

        [] when none is left (finished). A call with several runs (zeroshot: base, new) gets one job per
        run, named after its run folder. Jobs are grouped by dataset.
        """
        if not spec.runs:
            self.log(f"  {name}: skipped (already done)")
        jobs = []
        for run in spec.runs:
            part = "" if len(spec.runs) == 1 else "_" + run.output_dir.name
            jobs.append(Job(name + part.replace("_", " "), list(run.argv),
                            self.output / "logs" / f"{log_name}{part}.log", group=spec.dataset))
        return jobs

    # ----------------------------------------------------------------- stages
    def write_data(self) -> None:
        for variant in self.plan.variants:
            path = write_dataset(self.data_root, variant, counts=self.plan.counts, num_classes=self.plan.num_classes)
            self.log(f"  {DATASET_NAMES[variant]}: {path}")

    def _pretrain_checkpoints(self) -> dict[str, tuple[PretrainSettings, Path, bool]]:
        """Per role: the plan's pretraining settings, its checkpoint path, and whether it is cached."""
        out = {}
        for role, steps in (("teacher", self.plan.teacher_steps), ("student", self.plan.student_steps)):
            settings = PretrainSettings(role=role, steps=steps, batch_size=self.plan.pretrain_batch,
                                        bf16=bf16_is_fast())
            final, meta, _ = checkpoint_paths(settings, self.cache)
            out[role] = (settings, final, final.is_file() and meta.is_file())
        return out

    def pretrain(self) -> None:
        # Side by side, one thread each (these small matrices use a core better alone than split over two:
        # 1.1 core-seconds per teacher step on one thread, 1.4 on two); the teacher, ~3.5x costlier per step,
        # takes every thread from the step by which the student is expected to be done. The switch is tied
        # to a step, not to the student's end, because the thread count changes float summation order: this
        # way the teacher's weights do not depend on timing (and it keeps the schedule when it runs alone).
        grow_at = max(1, round(self.plan.student_steps * TEACHER_STEPS_PER_STUDENT_STEP))
        jobs = []
        for role, (settings, final, cached) in self._pretrain_checkpoints().items():
            self.weights[role] = final
            if cached:
                self.log(f"  {role}: cached {final}")
                continue
            argv = [sys.executable, "-m", "benchmarks.synthshapes.pretrain", role, "--steps", str(settings.steps),
                    "--batch-size", str(self.plan.pretrain_batch), "--cache", str(self.cache),
                    "--threads", str(self.threads), "--bf16", "on" if settings.bf16 else "off"]
            if role == "teacher":
                argv += ["--grow-threads", str(grow_at), str(self.workers * self.threads)]
            jobs.append(Job(f"pretrain {role} ({settings.steps} steps)", argv,
                            self.output / "logs" / f"pretrain_{role}.log"))
        run_jobs(jobs, self.workers, self.threads, REPO_ROOT, self.log)
        self.summary["pretrain"] = {}
        for role, path in self.weights.items():
            meta = json.loads(path.with_suffix(".json").read_text())
            self.summary["pretrain"][role] = {"zero_shot_100way": meta["zero_shot_acc"],
                                              "train_seconds": meta["train_seconds"], "path": str(path)}
            self.log(f"  {role}: 100-way zero-shot {meta['zero_shot_acc']:.1f}% ({meta['train_seconds']:.0f}s)")

    @property
    def teacher_root(self) -> Path:
        key = config_key({"teacher": self.weights["teacher"].name, "data": self.data_root.name,
                          "epochs": self.plan.teacher_epochs, "cfg": _config_content("PromptSRC")})
        return self.cache / "teachers" / key

    STAMP_FILE = "inputs.json"

    def set_aside_stale_runs(self) -> None:
        """Move finished runs made from other data / CLIPs / teachers out of the way.

        The protocol scripts skip any run whose results.json exists, so without this a rerun after a change
        to the world or the pretraining recipe would silently report the old runs.
        """
        stamp = {"data": self.data_root.name, "teacher": self.weights["teacher"].name,
                 "student": self.weights["student"].name, "teachers": self.teacher_root.name}
        path = self.output / self.STAMP_FILE
        previous = json.loads(path.read_text()) if path.is_file() else None
        runs = [self.output / name for name in ("zeroshot", "base2new") if (self.output / name).exists()]
        if runs and previous != stamp:
            stale = self.output.with_name(f"{self.output.name}.stale-{time.strftime('%Y%m%d-%H%M%S')}")
            stale.mkdir(parents=True)
            for folder in runs:
                folder.rename(stale / folder.name)
            self.log(f"  earlier runs in {self.output} were made from other inputs; moved to {stale}")
        write_json_atomic(path, stamp)

    def zeroshot_root(self, role: str) -> Path:
        """Where one CLIP's zero-shot runs are cached (OUTPUT_ROOT of the zeroshot protocol): they depend only
        on its weights, the data and the config, like the teachers; copied into <output>/zeroshot/."""
        key = config_key({"weights": self.weights[role].name, "data": self.data_root.name,
                          "cfg": _config_content("CoOp")})
        return self.cache / "zeroshot" / key

    @staticmethod
    def _zeroshot_settings(root: Path, role: str) -> Settings:
        """One CLIP's zero-shot runs below `root` (RUN_TAG = role, so both CLIPs share the output root)."""
        return Settings(output_root=str(root), run_tag=role)

    @classmethod
    def _zeroshot_dir(cls, root: Path, key: str, role: str) -> Path:
        """The zero-shot run folder of one CLIP on one dataset under `root`."""
        return Path(PROTOCOLS["zeroshot"].folder(cls._zeroshot_settings(root, role), key, cfg=CFG))

    def _teacher_settings(self, extra_opts: str = "") -> Settings:
        """The teacher's protocol settings: its runs and its installed checkpoint live in the cache."""
        return Settings(data=str(self.data_root), cfg=CFG, teacher_root=str(self.teacher_root),
                        output_root=str(self.teacher_root / "runs"), run_tag="", extra_opts=extra_opts)

    def zero_shot_and_teachers(self) -> None:
        """Teacher tuning and zero-shot evaluations in the worker pool; then each call's finishing step
        (install the teacher, combine the zero-shot parts into results.json), in-process."""
        train, calls, zeroshot_dirs = [], [], []
        for variant in self.plan.variants:
            key = self._key(variant)
            extra = f"MODEL.BACKBONE.WEIGHTS {self.weights['teacher']}"
            if self.plan.teacher_epochs:
                extra += f" OPTIM.MAX_EPOCH {self.plan.teacher_epochs}"
            spec = teacher_train(key, str(TEACHER_SEED), self._teacher_settings(extra))
            train += self._train_jobs(spec, f"teacher tuning {key}", f"teacher_{key}")   # first: the longest runs
            calls.append(spec)
        for variant in self.plan.variants:
            key = self._key(variant)
            for role in ("student", "teacher") if self.plan.teacher_reference_rows else ("student",):
                root = self.zeroshot_root(role)
                settings = replace(self._zeroshot_settings(root, role), data=str(self.data_root),
                                   extra_opts=f"MODEL.BACKBONE.WEIGHTS {self.weights[role]}")
                spec = zeroshot(key, CFG, settings)
                train += self._train_jobs(spec, f"zero-shot {role} {key}", f"zeroshot_{role}_{key}")
                calls.append(spec)
                zeroshot_dirs.append((self._zeroshot_dir(root, key, role), self._zeroshot_dir(self.output, key, role)))
        self._run_train(train)
        for spec in calls:
            if spec.finish is not None:
                self.log(f"  {spec.finish()}")
        for cached, copy in zeroshot_dirs:
            shutil.copytree(cached, copy, dirs_exist_ok=True)
        if self.plan.teacher_reference_rows:
            self._evaluate_teachers()

    def _teacher_run_dir(self, key: str) -> Path:
        return Path(PROTOCOLS["teacher_train"].folder(self._teacher_settings(), key, str(TEACHER_SEED)))

    def _evaluate_teachers(self) -> None:
        """Base and new accuracy of each prompt-tuned teacher (protocol teacher_test), cached as JSON."""
        jobs, todo = [], []
        for variant in self.plan.variants:
            key = self._key(variant)
            run_dir = self._teacher_run_dir(key)
            result = run_dir / "synth_teacher_eval.json"
            if result.is_file():
                continue
            spec = teacher_test(key, str(TEACHER_SEED),
                                     self._teacher_settings(f"MODEL.BACKBONE.WEIGHTS {self.weights['teacher']}"))
            logs = {}
            for run in spec.runs:
                logs[run.part] = run.output_dir.with_name(run.output_dir.name + ".log")
                jobs.append(Job(f"teacher eval {key} {run.part}", list(run.argv), logs[run.part], group=key))
            todo.append((result, logs))
        self._run_train(jobs)
        for result, logs in todo:
            write_json_atomic(result, {part: _last_accuracy(path) for part, path in logs.items()})

    def _student_settings(self, omega: float | None) -> Settings:
        """Where a student's run goes: PromptKD (omega None) or PromptKD_RSM (RUN_TAG w<omega>), all shots."""
        trainer, tag = ("PromptKD", "") if omega is None else ("PromptKD_RSM", f"w{_fmt_omega(omega)}")
        return Settings(cfg=CFG, trainer=trainer, shots="full", output_root=str(self.output), run_tag=tag)

    def _student_jobs(self, variant: str, seed: int, omega: float | None) -> list[Job]:
        """The base2new_train run of one student ([] when it is finished)."""
        extra = (f"MODEL.BACKBONE.WEIGHTS {self.weights['student']} "
                 f"TRAINER.PROMPTKD.TEACHER_WEIGHTS {self.weights['teacher']}")
        if self.plan.student_epochs:
            extra += f" OPTIM.MAX_EPOCH {self.plan.student_epochs}"
        if self.plan.student_lr:
            extra += f" OPTIM.LR {float(self.plan.student_lr)}"
        if omega is not None:
            extra += f" TRAINER.RSM.WEIGHT {float(omega)}"
        key = self._key(variant)
        settings = replace(self._student_settings(omega), data=str(self.data_root),
                           teacher_root=str(self.teacher_root), extra_opts=extra)
        spec = base2new_train(key, str(seed), settings)
        name = f"{settings.trainer}{' omega ' + _fmt_omega(omega) if omega is not None else ''} {key} seed {seed}"
        return self._train_jobs(spec, name, f"{settings.trainer}_{settings.run_tag or 'kd'}_{key}_seed{seed}")

    def student_dir(self, variant: str, seed: int, omega: float | None) -> Path:
        """A student's run folder (the base2new_train layout)."""
        return Path(PROTOCOLS["base2new_train"].folder(self._student_settings(omega), self._key(variant), str(seed)))

    def students(self) -> None:
        p = self.plan
        jobs = []
        for variant in p.variants:
            for seed in p.seeds:
                jobs += self._student_jobs(variant, seed, None)
                jobs += self._student_jobs(variant, seed, p.main_omega)
        for omega in p.omegas:
            if omega not in (0.0, p.main_omega):   # omega 0 is PromptKD itself (WEIGHT 0 == PromptKD, tested)
                for seed in p.seeds:
                    jobs += self._student_jobs(p.sweep_variant, seed, omega)
        self._run_train(jobs)
        best = self.best_omega()
        self.summary["best_omega"] = best
        if best not in (0.0, p.main_omega):
            self.log(f"  best omega on {p.sweep_variant}: {_fmt_omega(best)}; running it on the other datasets")
            self._run_train([job for v in p.variants if v != p.sweep_variant for s in p.seeds
                             for job in self._student_jobs(v, s, best)])

    # ----------------------------------------------------------------- results
    def _hm_stats(self, variant: str, omega: float | None, which: str = "best") -> dict | None:
        runs = [r for r in (read_result(self.student_dir(variant, seed, omega), which) for seed in self.plan.seeds) if r]
        if not runs:
            return None
        out = {"n": len(runs)}
        for metric in ("base", "new", "hm"):
            values = [r[metric] for r in runs]
            mean = sum(values) / len(values)
            out[metric] = mean
            out[metric + "_std"] = math.sqrt(sum((v - mean) ** 2 for v in values) / len(values))
            out[metric + "_runs"] = values
        return out

    def sweep_stats(self, which: str = "best") -> dict[float, dict]:
        out = {}
        for omega in self.plan.omegas:
            stats = self._hm_stats(self.plan.sweep_variant, None if omega == 0.0 else omega, which)
            if stats:
                out[omega] = stats
        return out

    def best_omega(self) -> float:
        """The omega > 0 with the highest mean HM (best-on-base checkpoints) on the sweep dataset."""
        stats = {o: s for o, s in self.sweep_stats().items() if o > 0}
        return max(stats, key=lambda o: stats[o]["hm"]) if stats else self.plan.main_omega

    def report(self) -> None:
        p, s = self.plan, self.summary
        rows = {}
        for variant in p.variants:
            key = self._key(variant)
            entry = {}
            for role in ("student", "teacher"):
                path = self._zeroshot_dir(self.output, key, role) / RESULTS_FILENAME
                if path.is_file():
                    entry[f"{role}_zero_shot"] = json.loads(path.read_text())["best"]
            teacher_eval = self._teacher_run_dir(key) / "synth_teacher_eval.json"
            if teacher_eval.is_file():
                acc = json.loads(teacher_eval.read_text())
                entry["teacher_tuned"] = {**acc, "hm": _hm(acc["base"], acc["new"])}
            for which in ("best", "last"):
                entry[f"PromptKD_{which}"] = self._hm_stats(variant, None, which)
                entry[f"PromptKD_RSM_w{_fmt_omega(p.main_omega)}_{which}"] = self._hm_stats(variant, p.main_omega, which)
                best = s.get("best_omega")
                if best not in (None, 0.0, p.main_omega):
                    entry[f"PromptKD_RSM_w{_fmt_omega(best)}_{which}"] = self._hm_stats(variant, best, which)
            rows[DATASET_NAMES[variant]] = entry
        s["datasets"] = rows
        s["targets"] = self._targets(rows)
        s["sweep"] = {_fmt_omega(o): st for o, st in self.sweep_stats().items()}
        s["entropy"] = self._entropy_curves()
        self._plots()
        (self.output / "summary.md").write_text(self.markdown())
        write_json_atomic(self.output / "summary.json", s)
        self.log("\n" + self.markdown())

    def _targets(self, rows: dict) -> dict:
        """The issue's targets that this run can check (timings are judged by whoever reads them)."""
        out = {}
        pre = self.summary.get("pretrain", {})
        default_pretraining = (self.plan.teacher_steps, self.plan.student_steps) == (DEFAULT_STEPS["teacher"],
                                                                                     DEFAULT_STEPS["student"])
        if pre and default_pretraining:   # the zero-shot targets are those of the default pretraining
            out["teacher_zero_shot_100way_ge_90"] = pre["teacher"]["zero_shot_100way"] >= 90
            out["student_zero_shot_100way_ge_80"] = pre["student"]["zero_shot_100way"] >= 80
        noisy = rows.get(DATASET_NAMES["noisy"], {})
        if noisy.get("PromptKD_best") and noisy.get("student_zero_shot"):
            gain = noisy["PromptKD_best"]["hm"] - noisy["student_zero_shot"]["hm"]
            out["noisy_promptkd_hm_minus_student_zero_shot_hm"] = round(gain, 2)
            out["noisy_gain_ge_15"] = gain >= 15
        return out

    def _entropy_curves(self) -> dict:
        """H(M) over training for every PromptKD_RSM run on the sweep dataset, and whether it collapsed."""
        rows, info = [], {}
        n_classes = self.plan.num_classes
        for omega in self.plan.omegas:
            if omega == 0.0:
                continue
            for seed in self.plan.seeds:
                log_path = self.student_dir(self.plan.sweep_variant, seed, omega) / "log.txt"
                if not log_path.is_file():
                    continue
                curve = read_entropy_curve(log_path)
                rows += [(_fmt_omega(omega), seed, it, h, mp) for it, h, mp in curve]
                if curve:
                    info.setdefault(_fmt_omega(omega), []).append(
                        {"seed": seed, "first_H": curve[0][1], "min_H": min(c[1] for c in curve),
                         "last_H": curve[-1][1], "last_max_p": curve[-1][2],
                         "first_iter_below_10pct": next((it for it, h, _ in curve
                                                         if h < 0.1 * curve[0][1]), None)})
        write_csv(self.output / "entropy_curves.csv", ["omega", "seed", "iteration", "H_M", "max_p"], rows)
        return {"note": f"H(M) max is log(N + C) (N = batch, C = {n_classes} classes)", "runs": info}

    def _plots(self) -> None:
        sweep = self.sweep_stats()
        omegas = sorted(sweep)
        write_csv(self.output / "hm_vs_omega.csv", ["omega", "n_seeds", "base", "new", "hm", "hm_std"],
                  [(_fmt_omega(o), sweep[o]["n"], sweep[o]["base"], sweep[o]["new"], sweep[o]["hm"], sweep[o]["hm_std"])
                   for o in omegas])
        backend = line_plot(self.output / "hm_vs_omega.png",
                            [(DATASET_NAMES[self.plan.sweep_variant], omegas, [sweep[o]["hm"] for o in omegas],
                              [sweep[o]["hm_std"] for o in omegas])],
                            "HM vs omega (best-on-base, mean +- std)", "omega", "HM (%)", log_x=True)
        series = []
        for omega in omegas:
            if omega == 0.0:
                continue
            log_path = self.student_dir(self.plan.sweep_variant, self.plan.seeds[0], omega) / "log.txt"
            curve = read_entropy_curve(log_path) if log_path.is_file() else []
            if curve:
                series.append((f"omega {_fmt_omega(omega)}", [c[0] for c in curve], [c[1] for c in curve], None))
        line_plot(self.output / "entropy_curves.png", series, f"H(M) over training (seed {self.plan.seeds[0]})",
                  "iteration", "H(M)")
        self.summary["plots"] = {"backend": backend, "files": ["hm_vs_omega.png", "entropy_curves.png",
                                                              "hm_vs_omega.csv", "entropy_curves.csv"]}

    def markdown(self) -> str:
        s, p = self.summary, self.plan
        lines = [f"# SynthShapes benchmark ({p.mode})", "",
                 "Tiny CLIPs pretrained on a synthetic 32x32 world of coloured shapes: these numbers show what the "
                 "methods do in this toy setting; they are not real-CLIP accuracies.", ""]
        if "pretrain" in s:
            lines += ["| pretrained CLIP | 100-way zero-shot | train time |", "|---|---|---|"]
            lines += [f"| {r} | {v['zero_shot_100way']:.1f}% | {v['train_seconds']:.0f}s |" for r, v in s["pretrain"].items()]
            lines.append("")
        lines += ["Base / New / HM (best-on-base checkpoint; mean +- population std over seeds "
                  f"{', '.join(map(str, p.seeds))}):", "",
                  "| dataset | method | Base | New | HM |", "|---|---|---|---|---|"]
        for name, entry in s.get("datasets", {}).items():
            for label, key in (("student zero-shot", "student_zero_shot"), ("teacher zero-shot", "teacher_zero_shot"),
                               ("teacher prompt-tuned (seed 1)", "teacher_tuned")):
                if entry.get(key):
                    e = entry[key]
                    lines.append(f"| {name} | {label} | {e['base']:.2f} | {e['new']:.2f} | {e['hm']:.2f} |")
            for k, st in entry.items():
                if st and k.endswith("_best") and isinstance(st, dict) and "hm_std" in st:
                    method = k[: -len("_best")].replace("_w", " omega=")
                    lines.append(f"| {name} | {method} | {st['base']:.2f} +- {st['base_std']:.2f} | "
                                 f"{st['new']:.2f} +- {st['new_std']:.2f} | {st['hm']:.2f} +- {st['hm_std']:.2f} |")
        if s.get("sweep"):
            lines += ["", f"Omega sweep on {DATASET_NAMES[p.sweep_variant]} (omega 0 = PromptKD):", "",
                      "| omega | HM | Base | New |", "|---|---|---|---|"]
            lines += [f"| {o} | {st['hm']:.2f} +- {st['hm_std']:.2f} | {st['base']:.2f} | {st['new']:.2f} |"
                      for o, st in s["sweep"].items()]
            lines += ["", f"Best omega > 0: {_fmt_omega(s.get('best_omega', p.main_omega))}"]
        if s.get("entropy", {}).get("runs"):
            lines += ["", "H(M) during training (first -> min -> last; 'collapse' = below 10% of its first value):", ""]
            for omega, runs in s["entropy"]["runs"].items():
                for r in runs:
                    lines.append(f"- omega {omega}, seed {r['seed']}: {r['first_H']:.3f} -> {r['min_H']:.3f} -> "
                                 f"{r['last_H']:.3f} (max p {r['last_max_p']:.3f}); collapse at iteration "
                                 f"{r['first_iter_below_10pct'] if r['first_iter_below_10pct'] else 'never'}")
        if s.get("targets"):
            lines += ["", "Targets: " + ", ".join(f"{k} = {v}" for k, v in s["targets"].items())]
        if s.get("timings"):
            lines += ["", "Timings (s): " + ", ".join(f"{k} {v:.0f}" for k, v in s["timings"].items())]
        if s.get("plots", {}).get("backend") == "pillow":
            lines += ["", "Plots drawn with Pillow (matplotlib is not installed); the CSVs hold the numbers."]
        return "\n".join(lines) + "\n"

    def pretrained_cached(self) -> bool:
        """Whether both pretrained CLIPs of this plan are already in the cache."""
        return all(cached for _, _, cached in self._pretrain_checkpoints().values())

    def run(self) -> dict:
        start = time.time()
        self.output.mkdir(parents=True, exist_ok=True)
        self.log(f"SynthShapes benchmark '{self.plan.mode}': cache {self.cache}, output {self.output}")
        self._stage("datasets", self.write_data)
        self._stage("pretraining", self.pretrain)
        self.set_aside_stale_runs()
        try:
            with TrainPool(self.workers, self.threads, REPO_ROOT, self.log) as self.pool:
                self._stage("zero-shot and teachers", self.zero_shot_and_teachers)
                self._stage("students", self.students)
        finally:
            self.pool = None
        self.summary["timings"]["total"] = round(time.time() - start, 1)
        self._stage("report", self.report)
        self.log(f"\nTable (tools/parse_results.py {self.output}):")
        self._run([Job("parse_results", [sys.executable, "tools/parse_results.py", str(self.output)],
                       self.output / "logs" / "parse_results.log")])
        self.log((self.output / "logs" / "parse_results.log").read_text())
        self.log(f"Summary: {self.output / 'summary.md'} (total {self.summary['timings']['total']:.0f}s)")
        return self.summary


def _config_content(trainer: str) -> dict:
    """What configs/trainers/<trainer>/synth_shapes.yaml sets, for the cache keys of the runs made with it:
    its parsed content, so that editing a comment does not throw the cached teachers and zero-shot runs away."""
    return yaml.safe_load((REPO_ROOT / "configs" / "trainers" / trainer / f"{CFG}.yaml").read_text())


def _hm(base: float, new: float) -> float:
    return 0.0 if base + new == 0 else 2 * base * new / (base + new)


def read_result(run_dir: Path, which: str = "best") -> dict | None:
    """Entry `which` ("best" / "last") of a run folder's results.json; None while the run has not finished."""
    path = Path(run_dir) / RESULTS_FILENAME
    return json.loads(path.read_text())[which] if path.is_file() else None


def mean_std(values: list[float]) -> dict:
    """Mean, population std (ddof 0, as tools/parse_results.py), min, max, count and the values."""
    return {"mean": sum(values) / len(values), "std": statistics.pstdev(values), "min": min(values),
            "max": max(values), "n": len(values), "values": values}


def result_stats(results: list[dict | None]) -> dict | None:
    """`mean_std` of Base / New / HM over the finished runs' entries (None: none finished)."""
    finished = [r for r in results if r]
    if not finished:
        return None
    return {metric: mean_std([r[metric] for r in finished]) for metric in ("base", "new", "hm")}


_ACCURACY = re.compile(r"\* accuracy: ([\d.]+)%")


def _last_accuracy(log_path: Path) -> float:
    found = _ACCURACY.findall(log_path.read_text(errors="replace"))
    if not found:
        raise RuntimeError(f"no '* accuracy:' line in {log_path}")
    return float(found[-1])


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description="SynthShapes: a CPU-sized PromptKD / AME benchmark.")
    parser.add_argument("--quick", action="store_true", help="CI-sized run (fewer pretraining steps, 1 seed, omega 0 and 50)")
    parser.add_argument("--mode", choices=sorted(PLANS), default=None, help="full | quick | tiny | demo | demo-full (overrides --quick)")
    parser.add_argument("--cache", default=None, help="cache folder (default $AME_CACHE or ~/.cache/ame/synthshapes)")
    parser.add_argument("--output", default=None, help="where runs and the summary go (default output/synthshapes/<mode>)")
    parser.add_argument("--workers", type=int, default=2, help="commands run at once (default 2)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per command (default 1)")
    parser.add_argument("--seeds", type=int, nargs="+", default=None, help="student seeds (override the mode's)")
    parser.add_argument("--check-cache", action="store_true",
                        help="only report whether the mode's pretrained CLIPs are cached (exit 0) or not (exit 3)")
    parser.add_argument("--paper", action="store_true",
                        help="the AME paper's training regime on this cache (benchmarks/synthshapes/paper.py)")
    parser.add_argument("--paper-quick", action="store_true", help="a cut of --paper that fits about 30 minutes")
    parser.add_argument("--baselines", action="store_true",
                        help="zero-shot, CoOp, CoCoOp, IVLP, MaPLe, PromptSRC, PromptKD(_RSM), KDPL(_RSM) on "
                             "SynthShapesNoisy, seeds 1-3, on this cache (benchmarks/synthshapes/baselines.py)")
    parser.add_argument("--baselines-tiny", action="store_true", help="the --baselines pipeline on the tiny plan")
    args = parser.parse_args(argv)
    if args.baselines or args.baselines_tiny:
        from benchmarks.synthshapes.baselines import main as baselines_main   # imports this module: loaded on demand

        passed = [a for a in (sys.argv[1:] if argv is None else argv) if a not in ("--baselines", "--baselines-tiny")]
        return baselines_main(["--mode", "baselines-tiny" if args.baselines_tiny else "baselines", *passed])
    if args.paper or args.paper_quick:
        from benchmarks.synthshapes.paper import main as paper_main   # imports this module: loaded on demand

        passed = [a for a in (sys.argv[1:] if argv is None else argv) if a not in ("--paper", "--paper-quick")]
        return paper_main(["--mode", "paper-quick" if args.paper_quick else "paper", *passed])
    mode = args.mode or ("quick" if args.quick else "full")
    plan = PLANS[mode]
    if args.seeds:
        plan = replace(plan, seeds=tuple(args.seeds))
    output = Path(args.output) if args.output else REPO_ROOT / "output" / "synthshapes" / mode
    bench = Benchmark(plan, cache_dir(args.cache), output.resolve(), workers=args.workers, threads=args.threads)
    if args.check_cache:
        cached = bench.pretrained_cached()
        print(f"SynthShapes '{mode}' pretrained CLIPs {'are' if cached else 'are not'} cached in {bench.cache}")
        raise SystemExit(0 if cached else 3)
    if mode == "demo-full" and not bench.pretrained_cached():
        raise SystemExit(f"Mode demo-full needs SynthShapes' pretrained CLIPs in {bench.cache}; build them with "
                         "`bash scripts/synth_benchmark.sh` (or run `bash scripts/demo.sh`, which pretrains its own "
                         "tiny CLIPs in seconds).")
    return bench.run()


if __name__ == "__main__":
    main()
