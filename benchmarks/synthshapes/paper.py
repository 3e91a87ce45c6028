"""SynthShapes in the AME paper's own training regime (its Sec. 4.1), on the default mode's cached CLIPs and teachers.

    bash scripts/synth_benchmark.sh --paper          the whole grid below, seeds 1-3
    bash scripts/synth_benchmark.sh --paper-quick    a cut that fits 30 minutes on 2 cores (see PAPER_PLANS)

What runs (protocol base2new_train, configs/trainers/<Trainer>/synth_shapes_paper.yaml: PromptKD's SGD, lr 0.005,
momentum 0.9, weight decay 5e-4, batch 8, 20 epochs, one constant warm-up epoch then cosine):
- the hosts PromptKD and Simple and their RSM versions PromptKD_RSM and Simple_RSM (omega 50), at 4, 16, 30
  shots and the full training split on SynthShapesNoisy, and at 16 shots on SynthShapesTextured;
- the omega sweep {0, 1, 5, 10, 25, 50, 100} of PromptKD_RSM at 16 shots on SynthShapesNoisy (omega 0 is
  PromptKD itself: RSM with weight 0 trains exactly like its host);
- the two opt-in variants of the term (TRAINER.RSM.SCORE_TEMPERATURE 0.5, TRAINER.RSM.CLASS_ALIGNED 0.1;
  trainers/rsm.py) as PromptKD_RSM at omega 50, 16 shots on SynthShapesNoisy;
- the large-batch rule of the ImageNet presets: PromptKD at batch 64 with the linearly scaled LR 0.04, the
  square-root-scaled 0.0141 and the unscaled 0.005, 16 shots on SynthShapesNoisy.

What it writes below <output> (default output/synthshapes/<mode>):
- summary.md / summary.json: Base / New / HM mean +- std over seeds, and the PAIRED difference RSM minus
  host per seed (same seed, same data, same teacher: the seed-to-seed swing cancels), its mean and spread;
- shots.png: accuracy against shots per trainer (tools/plot_shots.py);
- entropy_curves.png / .csv: H(M) and max p over training for each omega of the sweep;
- analysis/: t-SNE, F-score maps and separability numbers of PromptKD vs PromptKD_RSM at 16 shots
  (tools/analyze.py; skipped with a note when the optional extra, scikit-learn and matplotlib, is missing).

The datasets, pretrained CLIPs, zero-shot runs and teachers are the default mode's (`PLANS["full"]`), so they
come from the same cache (pretrained first when it is empty); only the students are trained here.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import math
import sys
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from benchmarks.synthshapes.benchmark import (DATASET_NAMES, PLANS, REPO_ROOT, Benchmark, Plan, _fmt_omega, mean_std,
                                              read_result, result_stats)
from benchmarks.synthshapes.cache import cache_dir, write_json_atomic
from benchmarks.synthshapes.jobs import Job
from benchmarks.synthshapes.plots import read_entropy_curve, two_panel_plot, write_csv
from dassl.run_files import RESULTS_FILENAME
from scripts.runs import PROTOCOLS, Settings, base2new_train

PAPER_CFG = "synth_shapes_paper"     # configs/trainers/<Trainer>/synth_shapes_paper.yaml
RSM_OF = {"PromptKD": "PromptKD_RSM", "Simple": "Simple_RSM"}   # host -> its RSM version
HOST_OF = {rsm: host for host, rsm in RSM_OF.items()}


@dataclass(frozen=True)
class PaperPlan:
    """The student runs of one paper-regime mode."""
    mode: str
    seeds: tuple = (1, 2, 3)
    shots: tuple = ("4", "16", "30", "full")   # every host and RSM version, on `shots_variant`
    shots_variant: str = "noisy"
    main_shots: str = "16"                     # the shots of the other datasets, the sweep and the analysis
    other_variants: tuple = ("textured",)
    hosts: tuple = ("PromptKD", "Simple")
    main_omega: float = 50.0
    omegas: tuple = (0.0, 1.0, 5.0, 10.0, 25.0, 50.0, 100.0)   # PromptKD_RSM sweep (0: PromptKD)
    analysis_seed: int = 1
    # The opt-in variants of the RSM term (trainers/rsm.py), as PromptKD_RSM at the main omega and shots:
    # (name, TRAINER.RSM option, value)
    variants: tuple = (("score_temperature", "SCORE_TEMPERATURE", 0.5), ("class_aligned", "CLASS_ALIGNED", 0.1))
    # The large-batch rule of the ImageNet presets, tested on PromptKD at the main shots: (batch, LR) pairs
    # beside the paper's (8, 0.005): the linear rule LR = 0.005 x B / 8, the square-root rule
    # LR = 0.005 x sqrt(B / 8), and the same batch without scaling.
    batch_scaling: tuple = ((64, 0.04), (64, 0.0141), (64, 0.005))


PAPER_PLANS = {
    "paper": PaperPlan("paper"),
    # Sized from measured runs (README, "SynthShapes in the paper's regime"): the whole grid took about 70
    # minutes on 2 cores shared with other work; a 16-shot run takes 40 s on a quiet core, 30 shots and the full
    # split about 2 and 4 times that. This cut (38 runs: 2 seeds, 4 and 16 shots, both datasets, omegas
    # 0 / 5 / 50 / 100, the variants and the batch rule) leaves 30 shots and the full split to --paper.
    "paper-quick": PaperPlan("paper-quick", seeds=(1, 2), shots=("4", "16"), omegas=(0.0, 5.0, 50.0, 100.0)),
}


@dataclass(frozen=True)
class PaperRun:
    """One student run: trainer, dataset variant, shots, seed and (RSM trainers) omega."""
    trainer: str
    variant: str
    shots: str
    seed: int
    omega: float | None = None
    rsm_variant: tuple | None = None   # (name, TRAINER.RSM key, value) of an opt-in variant of the term
    batch_lr: tuple | None = None      # (global batch, LR) instead of the config's (8, 0.005)

    @property
    def tag(self) -> str:
        """RUN_TAG: w<omega> for RSM runs (their folder names the weight, and the variant), b<B>_lr<LR> for a
        batch-scaling run, none for the hosts at the paper's batch."""
        parts = []
        if self.omega is not None:
            parts.append(f"w{_fmt_omega(self.omega)}" + (f"_{self.rsm_variant[0]}" if self.rsm_variant else ""))
        if self.batch_lr:
            parts.append(f"b{self.batch_lr[0]}_lr{self.batch_lr[1]:g}")
        return "_".join(parts)

    @property
    def extra_opts(self) -> str:
        """The run's config options beyond the benchmark's weights: omega, the variant's key, batch and LR."""
        opts = []
        if self.omega is not None:
            opts.append(f"TRAINER.RSM.WEIGHT {float(self.omega)}")
        if self.rsm_variant:
            opts.append(f"TRAINER.RSM.{self.rsm_variant[1]} {float(self.rsm_variant[2])}")
        if self.batch_lr:
            opts.append(f"DATALOADER.TRAIN_X.BATCH_SIZE {int(self.batch_lr[0])} OPTIM.LR {float(self.batch_lr[1])}")
        return " ".join(opts)

    @property
    def name(self) -> str:
        omega = f" omega {_fmt_omega(self.omega)}" if self.omega is not None else ""
        variant = f" {self.rsm_variant[0]} {self.rsm_variant[2]:g}" if self.rsm_variant else ""
        batch = f" batch {self.batch_lr[0]} lr {self.batch_lr[1]:g}" if self.batch_lr else ""
        return (f"{self.trainer}{omega}{variant}{batch} {DATASET_NAMES[self.variant]} {self.shots} shots "
                f"seed {self.seed}")


def variant_runs(plan: "PaperPlan", seed: int) -> list[PaperRun]:
    """The runs of the plan's RSM variants for one seed (PromptKD_RSM, main omega, shots and dataset)."""
    return [PaperRun("PromptKD_RSM", plan.shots_variant, plan.main_shots, seed, plan.main_omega, variant)
            for variant in plan.variants]


def plan_runs(plan: PaperPlan) -> list[PaperRun]:
    """Every run of `plan`, each once; the main question first (16 shots on the shots dataset, then the
    sweep and the variants of the term), so that a run stopped early already holds it."""
    out: list[PaperRun] = []

    def add(run: PaperRun) -> None:
        if run not in out:
            out.append(run)

    def pair(variant: str, shots: str, seed: int) -> None:
        for host in plan.hosts:
            add(PaperRun(host, variant, shots, seed))
            add(PaperRun(RSM_OF[host], variant, shots, seed, plan.main_omega))

    for seed in plan.seeds:
        pair(plan.shots_variant, plan.main_shots, seed)
    for omega in plan.omegas:
        for seed in plan.seeds:
            add(PaperRun("PromptKD", plan.shots_variant, plan.main_shots, seed) if omega == 0.0
                else PaperRun("PromptKD_RSM", plan.shots_variant, plan.main_shots, seed, float(omega)))
    for seed in plan.seeds:
        for run in variant_runs(plan, seed):
            add(run)
    for batch_lr in plan.batch_scaling:
        for seed in plan.seeds:
            add(PaperRun("PromptKD", plan.shots_variant, plan.main_shots, seed, batch_lr=tuple(batch_lr)))
    for shots in plan.shots:
        for seed in plan.seeds:
            pair(plan.shots_variant, shots, seed)
    for variant in plan.other_variants:
        for seed in plan.seeds:
            pair(variant, plan.main_shots, seed)
    return out


def _curve_summary(seed: int, curve: list) -> dict:
    """First, lowest and last H and the last max p of one run's entropy curve."""
    return {"seed": seed, "first_H": curve[0][1], "min_H": min(c[1] for c in curve), "last_H": curve[-1][1],
            "last_max_p": curve[-1][2]}


class PaperBenchmark(Benchmark):
    """The default benchmark's stages for data, CLIPs, zero-shot and teachers; the paper's students and report."""

    def __init__(self, paper: PaperPlan, cache: Path, output: Path, base: Plan = PLANS["full"],
                 workers: int = 2, threads: int = 1, log=print) -> None:
        variants = tuple(dict.fromkeys((paper.shots_variant, *paper.other_variants)))
        super().__init__(replace(base, mode=paper.mode, variants=variants, seeds=paper.seeds), cache, output, workers,
                         threads, log)
        self.paper = paper
        self.summary.update({"mode": paper.mode, "paper_plan": asdict(paper)})

    # ----------------------------------------------------------------- runs
    def run_settings(self, run: PaperRun) -> Settings:
        """The protocol settings of one student run (its folder: <output>/base2new/train_base/<dataset>/
        shots_<S>/<trainer>/synth_shapes_paper[_w<omega>]/seed<N>)."""
        extra = (f"MODEL.BACKBONE.WEIGHTS {self.weights.get('student', '')} "
                 f"TRAINER.PROMPTKD.TEACHER_WEIGHTS {self.weights.get('teacher', '')}")
        if run.extra_opts:
            extra += " " + run.extra_opts
        return Settings(data=str(self.data_root), trainer=run.trainer, shots=run.shots, cfg=PAPER_CFG,
                        teacher_root=str(self.teacher_root), output_root=str(self.output), run_tag=run.tag,
                        extra_opts=extra)

    def run_dir(self, run: PaperRun) -> Path:
        return Path(PROTOCOLS["base2new_train"].folder(self.run_settings(run), self._key(run.variant), str(run.seed)))

    def run_cost(self, run: PaperRun) -> float:
        """Expected cost of a run in batch-8 training steps (the unit of the time-left estimate): 20 epochs of
        training steps plus a validation pass each, which costs about 80 such steps (measured on a 16-shot
        PromptKD_RSM run: 1.9 s for the 2,000 base test images against 23 ms a step). The students train on
        the unlabelled images of every class (PromptKD's base-to-new setting), base and new; a larger batch
        takes fewer, proportionally larger steps."""
        per_class = self.plan.counts["train"] if run.shots == "full" else min(int(run.shots), self.plan.counts["train"])
        batch = run.batch_lr[0] if run.batch_lr else 8
        steps = math.ceil(self.plan.num_classes * per_class / batch) * batch / 8
        return 20 * (steps + 80)

    def paper_jobs(self) -> list[Job]:
        """The train.py jobs of every run still to do (finished runs are skipped by the protocol)."""
        jobs = []
        for run in plan_runs(self.paper):
            spec = base2new_train(self._key(run.variant), str(run.seed), self.run_settings(run))
            log_name = f"{run.trainer}_{run.tag or 'host'}_{self._key(run.variant)}_{run.shots}shots_seed{run.seed}"
            for job in self._train_jobs(spec, run.name, log_name):
                job.cost = self.run_cost(run)
                jobs.append(job)
        return jobs

    def students(self) -> None:
        jobs = self.paper_jobs()
        self.log(f"  {len(jobs)} student runs to do ({len(plan_runs(self.paper)) - len(jobs)} already finished)")
        self._run_train(jobs)

    # ----------------------------------------------------------------- results
    def _result(self, run: PaperRun, which: str = "best") -> dict | None:
        return read_result(self.run_dir(run), which)

    def _stats(self, runs: list[PaperRun], which: str = "best") -> dict | None:
        """Base / New / HM over the seeds of `runs` (one configuration) that finished."""
        return result_stats([self._result(run, which) for run in runs])

    def _paired(self, host_runs: list[PaperRun], rsm_runs: list[PaperRun], which: str = "best") -> dict | None:
        """RSM minus host on the same seed, for the seeds where both finished."""
        diffs: dict[str, list[float]] = {"base": [], "new": [], "hm": []}
        seeds = []
        for host, rsm in zip(host_runs, rsm_runs):
            a, b = self._result(host, which), self._result(rsm, which)
            if a and b:
                seeds.append(host.seed)
                for metric in diffs:
                    diffs[metric].append(b[metric] - a[metric])
        if not seeds:
            return None
        return {"seeds": seeds, **{metric: mean_std(values) for metric, values in diffs.items()}}

    def _configurations(self) -> list[tuple[str, str, str, float | None]]:
        """(variant, shots, trainer, omega) of the table: every host and RSM version at the main omega."""
        p = self.paper
        cells = [(p.shots_variant, s) for s in p.shots]
        if p.main_shots not in p.shots:
            cells.insert(0, (p.shots_variant, p.main_shots))
        cells += [(v, p.main_shots) for v in p.other_variants]
        out = []
        for variant, shots in cells:
            for host in p.hosts:
                out += [(variant, shots, host, None), (variant, shots, RSM_OF[host], p.main_omega)]
        return out

    def _seeds(self, trainer: str, variant: str, shots: str, omega: float | None) -> list[PaperRun]:
        return [PaperRun(trainer, variant, shots, seed, omega) for seed in self.paper.seeds]

    def report(self) -> None:
        p, s = self.paper, self.summary
        table, paired = [], []
        for variant, shots, trainer, omega in self._configurations():
            row = {"dataset": DATASET_NAMES[variant], "shots": shots, "trainer": trainer,
                   "omega": omega, **{which: self._stats(self._seeds(trainer, variant, shots, omega), which)
                                      for which in ("best", "last")}}
            table.append(row)
            if trainer in HOST_OF:
                host = HOST_OF[trainer]
                paired.append({"dataset": DATASET_NAMES[variant], "shots": shots, "host": host, "rsm": trainer,
                               "omega": omega, **{which: self._paired(self._seeds(host, variant, shots, None),
                                                                      self._seeds(trainer, variant, shots, omega), which)
                                                  for which in ("best", "last")}})
        sweep = []
        host_runs = self._seeds("PromptKD", p.shots_variant, p.main_shots, None)
        for omega in p.omegas:
            runs = host_runs if omega == 0.0 else self._seeds("PromptKD_RSM", p.shots_variant, p.main_shots, float(omega))
            sweep.append({"omega": omega, "best": self._stats(runs), "paired_vs_PromptKD":
                          None if omega == 0.0 else self._paired(host_runs, runs)})
        variants = []
        faithful = self._seeds("PromptKD_RSM", p.shots_variant, p.main_shots, p.main_omega)
        for variant in p.variants:
            runs = [PaperRun("PromptKD_RSM", p.shots_variant, p.main_shots, seed, p.main_omega, variant)
                    for seed in p.seeds]
            variants.append({"name": variant[0], "key": f"TRAINER.RSM.{variant[1]}", "value": variant[2],
                             "best": self._stats(runs), "last": self._stats(runs, "last"),
                             "paired_vs_PromptKD": self._paired(host_runs, runs),
                             "paired_vs_faithful_RSM": self._paired(faithful, runs),
                             "entropy": self._entropy_summary(runs)})
        batch_rows = [{"batch": 8, "lr": 0.005, "best": self._stats(host_runs), "paired_vs_batch8": None}]
        for batch, lr in p.batch_scaling:
            runs = [PaperRun("PromptKD", p.shots_variant, p.main_shots, seed, batch_lr=(batch, lr)) for seed in p.seeds]
            batch_rows.append({"batch": batch, "lr": lr, "best": self._stats(runs),
                               "paired_vs_batch8": self._paired(host_runs, runs)})
        s.update({"table": table, "paired": paired, "sweep": sweep, "variants": variants, "batch_scaling": batch_rows,
                  "zero_shot": self._zero_shot_rows(), "entropy": self._entropy(), "plots": {}, "notes": []})
        self._shot_plot()
        self._analysis()
        (self.output / "summary.md").write_text(self.markdown())
        write_json_atomic(self.output / "summary.json", s)
        self.log("\n" + self.markdown())

    def _zero_shot_rows(self) -> dict:
        rows = {}
        for variant in self.plan.variants:
            for role in ("student", "teacher"):
                path = self._zeroshot_dir(self.output, self._key(variant), role) / RESULTS_FILENAME
                if path.is_file():
                    rows[f"{DATASET_NAMES[variant]} {role}"] = json.loads(path.read_text())["best"]
        return rows

    def _entropy(self) -> dict:
        """H(M) and max p over training of every sweep run (CSV), one plot for the analysis seed, and when H(M)
        first fell below 10% of its first value."""
        p, rows, info, panels = self.paper, [], {}, ([], [])
        for omega in p.omegas:
            if omega == 0.0:
                continue
            for seed in p.seeds:
                curve = self._curve(PaperRun("PromptKD_RSM", p.shots_variant, p.main_shots, seed, float(omega)))
                if not curve:
                    continue
                rows += [(_fmt_omega(omega), seed, it, h, mp) for it, h, mp in curve]
                info.setdefault(_fmt_omega(omega), []).append(
                    {**_curve_summary(seed, curve),
                     "first_iter_below_10pct": next((it for it, h, _ in curve if h < 0.1 * curve[0][1]), None)})
                if seed == p.analysis_seed:
                    label = f"omega {_fmt_omega(omega)}"
                    panels[0].append((label, [c[0] for c in curve], [c[1] for c in curve], None))
                    panels[1].append((label, [c[0] for c in curve], [c[2] for c in curve], None))
        write_csv(self.output / "entropy_curves.csv", ["omega", "seed", "iteration", "H_M", "max_p"], rows)
        if panels[0]:
            two_panel_plot(self.output / "entropy_curves.png", panels,
                           f"PromptKD_RSM, {DATASET_NAMES[p.shots_variant]}, {p.main_shots} shots, seed {p.analysis_seed}",
                           "iteration", ("H(M)", "max p"))
        return {"note": "H(M) starts at log(N + C) (N = batch 8, C = base classes) and is 0 at collapse", "runs": info}

    def _curve(self, run: PaperRun) -> list:
        """(iteration, H, max p) over training from the run's log ([] before it has logged any)."""
        log_path = self.run_dir(run) / "log.txt"
        return read_entropy_curve(log_path) if log_path.is_file() else []

    def _entropy_summary(self, runs: list[PaperRun]) -> list[dict]:
        """`_curve_summary` of each run that logged the term's entropy."""
        return [_curve_summary(run.seed, curve) for run in runs if (curve := self._curve(run))]

    def _extra_installed(self) -> bool:
        return all(importlib.util.find_spec(m) is not None for m in ("sklearn", "matplotlib"))

    def _tool(self, name: str, argv: list[str], what: str) -> bool:
        """Run tools/<name> (its output in logs/); on failure record a note instead of stopping the report."""
        log_path = self.output / "logs" / f"{Path(name).stem}.log"
        job = Job(what, [sys.executable, f"tools/{name}", *argv], log_path)
        try:
            self._run([job])
            return True
        except RuntimeError:
            self.summary["notes"].append(f"{what} failed; see {log_path}")
            self.log(f"  {what} failed (log {log_path}); the rest of the report goes on")
            return False

    def _shot_plot(self) -> None:
        if not self._extra_installed():
            self.summary["notes"].append("shots.png skipped: matplotlib missing (pip install -e \".[analysis]\")")
            return
        if self._tool("plot_shots.py", [str(self.output), "--out", str(self.output / "shots.png")], "shot curves"):
            self.summary["plots"]["shots"] = "shots.png"

    def _analysis(self) -> None:
        p = self.paper
        runs = [self.run_dir(PaperRun("PromptKD", p.shots_variant, p.main_shots, p.analysis_seed)),
                self.run_dir(PaperRun("PromptKD_RSM", p.shots_variant, p.main_shots, p.analysis_seed, p.main_omega))]
        if not self._extra_installed():
            self.summary["notes"].append("analysis/ skipped: scikit-learn or matplotlib missing "
                                         "(pip install -e \".[analysis]\", then run tools/analyze.py on the two runs)")
            return
        if not all((r / RESULTS_FILENAME).is_file() for r in runs):
            self.summary["notes"].append("analysis/ skipped: the PromptKD / PromptKD_RSM runs it compares did not finish")
            return
        out = self.output / "analysis"
        if self._tool("analyze.py", [*map(str, runs), "--out", str(out), "--labels", "PromptKD",
                                     f"PromptKD_RSM_w{_fmt_omega(p.main_omega)}"], "analysis panels"):
            self.summary["plots"]["analysis"] = "analysis/"

    # ----------------------------------------------------------------- markdown
    def markdown(self) -> str:
        s, p = self.summary, self.paper

        def cell(st: dict | None, metric: str) -> str:
            return "-" if not st else f"{st[metric]['mean']:.2f} +- {st[metric]['std']:.2f}"

        def method(trainer: str, omega) -> str:
            return trainer if omega is None else f"{trainer} (omega {_fmt_omega(omega)})"

        lines = [f"# SynthShapes in the paper's regime ({p.mode})", "",
                 "PromptKD's optimisation (SGD lr 0.005, momentum 0.9, weight decay 5e-4, batch 8, 20 epochs, warm-up "
                 "then cosine) on tiny CLIPs in a synthetic 32x32 world: what the methods do in this toy setting, "
                 "not real-CLIP accuracies. Best-on-base checkpoint; mean +- population std over seeds "
                 f"{', '.join(map(str, p.seeds))}.", ""]
        if s.get("zero_shot"):
            lines += ["| zero-shot CLIP | Base | New | HM |", "|---|---|---|---|"]
            lines += [f"| {k} | {v['base']:.2f} | {v['new']:.2f} | {v['hm']:.2f} |" for k, v in s["zero_shot"].items()]
            lines.append("")
        lines += ["| dataset | shots | method | Base | New | HM | seeds |", "|---|---|---|---|---|---|---|"]
        for row in s.get("table", []):
            st = row["best"]
            lines.append(f"| {row['dataset']} | {row['shots']} | {method(row['trainer'], row['omega'])} | "
                         f"{cell(st, 'base')} | {cell(st, 'new')} | {cell(st, 'hm')} | {st['hm']['n'] if st else 0} |")
        lines += ["", "Paired difference RSM minus host, same seed (mean +- std over seeds; [min, max]):", "",
                  "| dataset | shots | RSM - host | HM | Base | New | per-seed HM |", "|---|---|---|---|---|---|---|"]
        for row in s.get("paired", []):
            d = row["best"]
            if not d:
                continue
            lines.append(f"| {row['dataset']} | {row['shots']} | {row['rsm']} - {row['host']} | "
                         f"{d['hm']['mean']:+.2f} +- {d['hm']['std']:.2f} [{d['hm']['min']:+.2f}, {d['hm']['max']:+.2f}] | "
                         f"{d['base']['mean']:+.2f} | {d['new']['mean']:+.2f} | "
                         f"{', '.join(f'{v:+.2f}' for v in d['hm']['values'])} |")
        lines += ["", f"Omega sweep, PromptKD_RSM on {DATASET_NAMES[p.shots_variant]}, {p.main_shots} shots (omega 0 = "
                  "PromptKD):", "", "| omega | HM | Base | New | HM minus PromptKD (paired) |", "|---|---|---|---|---|"]
        for row in s.get("sweep", []):
            st, d = row["best"], row["paired_vs_PromptKD"]
            diff = "-" if not d else f"{d['hm']['mean']:+.2f} +- {d['hm']['std']:.2f}"
            lines.append(f"| {_fmt_omega(row['omega'])} | {cell(st, 'hm')} | {cell(st, 'base')} | {cell(st, 'new')} | {diff} |")
        if s.get("variants"):
            lines += ["", f"Opt-in variants of the RSM term (PromptKD_RSM, omega {_fmt_omega(p.main_omega)}, "
                      f"{DATASET_NAMES[p.shots_variant]}, {p.main_shots} shots; trainers/rsm.py), paired per seed:", "",
                      "| variant | HM | Base | New | HM minus PromptKD | HM minus faithful RSM | H first -> last (seed 1) |",
                      "|---|---|---|---|---|---|---|"]
            for row in s["variants"]:
                st, d_host, d_rsm = row["best"], row["paired_vs_PromptKD"], row["paired_vs_faithful_RSM"]

                def diff(d):
                    return "-" if not d else f"{d['hm']['mean']:+.2f} +- {d['hm']['std']:.2f}"
                trace = next((f"{e['first_H']:.3f} -> {e['last_H']:.3f} (max p {e['last_max_p']:.3f})"
                              for e in row["entropy"]), "-")
                lines.append(f"| {row['key']} {row['value']:g} | {cell(st, 'hm')} | {cell(st, 'base')} | "
                             f"{cell(st, 'new')} | {diff(d_host)} | {diff(d_rsm)} | {trace} |")
        if len(s.get("batch_scaling", [])) > 1:
            lines += ["", f"Large-batch rule (PromptKD, {DATASET_NAMES[p.shots_variant]}, {p.main_shots} shots; the "
                      "ImageNet presets' linear rule is LR = 0.005 x B / 8):", "",
                      "| batch | LR | HM | Base | New | HM minus batch 8 (paired) |", "|---|---|---|---|---|---|"]
            for row in s["batch_scaling"]:
                st, d = row["best"], row["paired_vs_batch8"]
                diff = "-" if not d else f"{d['hm']['mean']:+.2f} +- {d['hm']['std']:.2f}"
                lines.append(f"| {row['batch']} | {row['lr']:g} | {cell(st, 'hm')} | {cell(st, 'base')} | "
                             f"{cell(st, 'new')} | {diff} |")
        runs = s.get("entropy", {}).get("runs", {})
        if runs:
            lines += ["", "H(M) during training (first -> min -> last; collapse = below 10% of its first value):", ""]
            for omega, entries in runs.items():
                for r in entries:
                    when = r["first_iter_below_10pct"] or "never"
                    lines.append(f"- omega {omega}, seed {r['seed']}: {r['first_H']:.3f} -> {r['min_H']:.3f} -> "
                                 f"{r['last_H']:.3f} (last max p {r['last_max_p']:.3f}); collapse at iteration {when}")
        analysis = self.output / "analysis" / "analysis.json"
        if analysis.is_file():
            lines += ["", f"Separability of PromptKD vs PromptKD_RSM ({p.main_shots} shots, seed {p.analysis_seed}): "
                      "analysis/analysis.json, t-SNE analysis/tsne.png, F-score maps analysis/fscore.png."]
        files = [f for f in ("shots.png", "entropy_curves.png", "entropy_curves.csv") if (self.output / f).is_file()]
        if files:
            lines += ["", "Plots: " + ", ".join(files)]
        for note in s.get("notes", []):
            lines += ["", f"Note: {note}"]
        if s.get("timings"):
            lines += ["", "Timings (s): " + ", ".join(f"{k} {v:.0f}" for k, v in s["timings"].items())]
        return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description="SynthShapes in the AME paper's training regime (Sec. 4.1).")
    parser.add_argument("--mode", choices=sorted(PAPER_PLANS), default="paper", help="paper | paper-quick")
    parser.add_argument("--cache", default=None, help="cache folder (default $AME_CACHE or ~/.cache/ame/synthshapes)")
    parser.add_argument("--output", default=None, help="where runs and the summary go (default output/synthshapes/<mode>)")
    parser.add_argument("--workers", type=int, default=2, help="commands run at once (default 2)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per command (default 1)")
    parser.add_argument("--seeds", type=int, nargs="+", default=None, help="student seeds (override the mode's)")
    args = parser.parse_args(argv)
    plan = PAPER_PLANS[args.mode]
    if args.seeds:
        plan = replace(plan, seeds=tuple(args.seeds), analysis_seed=args.seeds[0])
    output = Path(args.output) if args.output else REPO_ROOT / "output" / "synthshapes" / args.mode
    return PaperBenchmark(plan, cache_dir(args.cache), output.resolve(), workers=args.workers, threads=args.threads).run()


if __name__ == "__main__":
    main()
