#!/usr/bin/env python
"""Analyse the student's image features of one or more distillation runs (AME's Fig. 3 and 4, and numbers).

Usage::

    python tools/analyze.py RUN_DIR [RUN_DIR ...] [--split all|val|test] [--load-epoch E] [--out DIR]
        [--root DATA] [--space projected|backbone|manifold] [--knn-k K] [--tsne-max-points N]
        [--labels L ...] [--opts KEY VALUE ...]

A run folder is the ``OUTPUT_DIR`` of ``train.py`` with a distillation trainer (PromptKD, PromptKD_RSM,
Simple, Simple_RSM). The run is rebuilt from its ``config.yaml`` (``--root`` replaces ``DATASET.ROOT``,
``--opts`` sets further keys, e.g. a moved teacher), its checkpoint is loaded (``model-best.pth.tar``, the
best-on-base checkpoint PromptKD reports, or ``model.pth.tar-<E>`` with ``--load-epoch E``), and the
student runs over the evaluation images. Needs the optional extra: ``pip install -e ".[analysis]"``.

``--split`` (default ``all``): under base2novel ``val`` is the base classes' test images, ``test`` the new
classes' test images and ``all`` both (the default, so that base and new can be compared in one run);
under cross every split is the target's test images.

Outputs in ``--out`` (default ``RUN_DIR/analysis`` for one run, ``./analysis`` for several):

- ``features.npz`` (one run) or ``features_<i>_<label>.npz`` (several; the name is in analysis.json):
  ``backbone`` [N, D_s] the student CLIP's image features; ``projected`` [N, D_t] the same after the
  student's projector (unnormalised; the student is scored with their normalised version); for RSM runs
  ``manifold`` [N, R], the image rows of the RSM manifold (phi_v of the feature the RSM term uses), and
  ``manifold_text`` [C, R] its text rows; ``class_vectors`` [C, D_t] the teacher's normalised class
  vectors; ``labels`` [N] the global class index (base2novel: new classes come after the base ones);
  ``is_new`` [N] whether the image's class is a new class; ``classnames`` [C]; and the metadata
  ``label trainer dataset protocol split checkpoint_epoch num_base`` (0-d arrays);
- ``tsne.png``: 2-D t-SNE of each run's ``--space`` features (L2-normalised; the manifold rows raw),
  runs side by side on shared axis limits, colour = class, circle = base class, triangle = new class.
  scikit-learn's TSNE with PCA initialisation, automatic learning rate, perplexity min(30, (N - 1) / 3),
  random_state 0, the exact method up to 1000 images and Barnes-Hut beyond, on at most
  ``--tsne-max-points`` images (a fixed random subset beyond): the same features give the same picture;
- ``fscore.png``: per run, the one-vs-rest ANOVA F-score of every ``--space`` dimension for every class
  (a row per class, a column per dimension), shown as log10(1 + F);
- ``analysis.json``: per run, ``class_vector_accuracy`` and, for every feature space (``backbone``,
  ``projected``, and ``manifold`` for RSM runs) and every group of images (``all``; under base2novel also
  ``base`` and ``new``, each with its own classes only), ``separability``.

Every number (computed on L2-normalised backbone / projected rows, so Euclidean distance is a monotone
function of cosine similarity, and on the raw manifold rows; ``tools/analysis/metrics.py``):

- ``class_vector_accuracy`` (%): images whose most cosine-similar teacher class vector, among the group's
  classes, is their own class's. ``base`` and ``new`` reproduce PromptKD's Base and New accuracy of the
  loaded checkpoint; ``all`` scores every image against every class;
- ``intra_class_distance``: mean distance of an image to its class mean;
- ``inter_class_distance``: mean distance between two class means, over all pairs of classes;
- ``intra_inter_ratio``: intra / inter; small when classes gather tightly around well separated points
  (what AME's Theorem 1 predicts: classes gather at h_c, separated by zeta > 0);
- ``silhouette``: mean silhouette coefficient (b - a) / max(a, b), a = mean distance to the own class's
  other images, b = smallest mean distance to another class's images; in [-1, 1], higher is better;
- ``knn_accuracy`` (%): leave-one-out k-nearest-neighbour accuracy (k = ``knn_k``, ``--knn-k``, default 5,
  capped at N - 1; a tied vote goes to the tied class met first, nearest first);
- ``effective_rank``: the exponential of the entropy of the normalised singular values of the
  mean-centred features, exp(-sum p_i log p_i) with p_i = s_i / sum s_j (Roy & Vetterli, 2007): about
  how many directions the features really use, between 1 and min(N, D);
- ``n_images``, ``n_classes``, ``dim``: the size of what was measured.

A number that is undefined for the images at hand (e.g. a silhouette with one image per class) is null.
Every step is deterministic: the run's seed is set before the trainer is built, the loaders are
sequential, and t-SNE and the subset use fixed seeds.
"""
from __future__ import annotations

import argparse
import gc
import os
import re
import sys
from pathlib import Path
from typing import List, Optional, Sequence

import numpy as np

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dassl.utils import UserError, expected_failure_line  # noqa: E402
from tools.analysis.extra import require_analysis_extra  # noqa: E402
from tools.analysis.features import SPACES, SPLITS, FeatureSet  # noqa: E402

DEFAULT_SPLIT = "all"
DEFAULT_SPACE = "projected"
DEFAULT_KNN_K = 5
DEFAULT_TSNE_MAX_POINTS = 5000
FEATURES_FILE = "features.npz"
ANALYSIS_FILE = "analysis.json"
TSNE_FILE = "tsne.png"
FSCORE_FILE = "fscore.png"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tools/analyze.py", description=__doc__.split("\n\n")[0],
        epilog="The full description of every output and number: the top of tools/analyze.py.")
    parser.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="run folder(s) (train.py's OUTPUT_DIR)")
    parser.add_argument("--split", choices=SPLITS, default=DEFAULT_SPLIT,
                        help="evaluation images: all (default; base2novel: base and new classes), "
                             "val (base classes), test (new classes)")
    parser.add_argument("--load-epoch", type=int, default=None,
                        help="load model.pth.tar-<E> instead of model-best.pth.tar")
    parser.add_argument("--out", default=None,
                        help="output folder (default: RUN_DIR/analysis for one run, ./analysis for several)")
    parser.add_argument("--root", default=None, help="datasets folder, replacing the run's DATASET.ROOT")
    parser.add_argument("--space", choices=SPACES, default=DEFAULT_SPACE,
                        help="features shown in tsne.png and fscore.png (default projected; manifold: RSM runs)")
    parser.add_argument("--knn-k", type=int, default=DEFAULT_KNN_K, help="k of the k-NN accuracy (default 5)")
    parser.add_argument("--tsne-max-points", type=int, default=DEFAULT_TSNE_MAX_POINTS,
                        help="t-SNE on at most this many images per run (a fixed random subset; 0: all)")
    parser.add_argument("--labels", nargs="+", default=None, help="a name per run for titles (default: trainer)")
    parser.add_argument("--opts", nargs="+", default=[], metavar="KEY VALUE",
                        help="config overrides for every run, as KEY VALUE pairs (put this option last)")
    return parser


def run_labels(run_dirs: Sequence[str], trainer_names: Sequence[str]) -> List[str]:
    """A distinct name per run: its trainer, with the shortest distinguishing tail of its path when needed."""
    labels = list(trainer_names)
    if len(set(labels)) == len(labels):
        return labels
    parts = [Path(d).resolve().parts for d in run_dirs]
    for depth in range(1, max(len(p) for p in parts) + 1):
        candidates = [f"{name} ({'/'.join(p[-depth:])})" for name, p in zip(trainer_names, parts)]
        if len(set(candidates)) == len(candidates):
            return candidates
    return [f"{name} ({index + 1})" for index, name in enumerate(trainer_names)]


def features_filename(index: int, label: str, several: bool) -> str:
    """``features.npz`` for one run; ``features_<i>_<label>.npz`` (file-safe) for several."""
    if not several:
        return FEATURES_FILE
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", label).strip("_") or "run"
    return f"features_{index + 1}_{safe}.npz"


def default_out(run_dirs: Sequence[str]) -> str:
    return os.path.join(run_dirs[0], "analysis") if len(run_dirs) == 1 else "analysis"


def extract_runs(args: argparse.Namespace, out_dir: str) -> List[dict]:
    """Load every run and extract its features (configs are all read first, so a bad one fails fast)."""
    from tools.analysis.features import extract_features
    from tools.analysis.run import build_run_trainer, check_distillation_trainer, load_run_config, uses_rsm

    configs = [load_run_config(run_dir, root=args.root, opts=args.opts) for run_dir in args.run_dirs]
    for cfg, run_dir in zip(configs, args.run_dirs):
        check_distillation_trainer(cfg, run_dir)
        if args.space == "manifold" and not uses_rsm(cfg):
            raise UserError(f'--space manifold: the run "{run_dir}" ({cfg.TRAINER.NAME}) has no RSM manifold; '
                            "use --space projected or backbone")
    if args.labels is not None and len(args.labels) != len(args.run_dirs):
        raise UserError(f"--labels: {len(args.labels)} names for {len(args.run_dirs)} run folders")
    labels = args.labels or run_labels(args.run_dirs, [cfg.TRAINER.NAME for cfg in configs])
    several = len(args.run_dirs) > 1
    runs = []
    for index, (cfg, run_dir, label) in enumerate(zip(configs, args.run_dirs, labels)):
        print(f"[{index + 1}/{len(configs)}] {label}: loading {run_dir}", flush=True)
        trainer = build_run_trainer(cfg, args.load_epoch)
        features = extract_features(trainer, split=args.split, label=label,
                                    progress=lambda line: print(line, flush=True))
        name = features_filename(index, label, several)
        features.save(os.path.join(out_dir, name))
        print(f"Features written to {os.path.join(out_dir, name)}", flush=True)
        runs.append({"run_dir": run_dir, "features": features, "features_file": name,
                     "checkpoint": "model-best.pth.tar" if args.load_epoch is None
                     else f"model.pth.tar-{args.load_epoch}"})
        del trainer
        gc.collect()
    return runs


def panel_title(features: FeatureSet, space: str, numbers: Optional[dict]) -> str:
    meta = features.meta
    title = f"{meta.get('label')}: {space} features\n{meta.get('dataset')}, epoch {meta.get('checkpoint_epoch')}"
    if numbers:
        parts = []
        if numbers.get("silhouette") is not None:
            parts.append(f"silhouette {numbers['silhouette']:.2f}")
        if numbers.get("knn_accuracy") is not None:
            parts.append(f"{numbers['knn_k']}-NN {numbers['knn_accuracy']:.1f}%")
        if parts:
            title += ", " + ", ".join(parts)
    return title


def write_figures(runs: List[dict], args: argparse.Namespace, out_dir: str) -> None:
    """tsne.png and fscore.png of the ``--space`` features of every run."""
    from tools.analysis import metrics, plots
    from tools.analysis.report import space_rows

    classnames = runs[0]["features"].classnames
    if any(run["features"].classnames != classnames for run in runs[1:]):
        print("Note: the runs have different class lists; the figures use the first run's class names")
    # The F-score rows: the classes that have images in some run (--split val / test leave out half).
    present = np.unique(np.concatenate([run["features"].labels for run in runs]))
    tsne_panels, fscore_panels = [], []
    for run in runs:
        features = run["features"]
        rows = space_rows(features, args.space)
        numbers = run["analysis"]["separability"][args.space]["all"]
        keep = plots.subsample(len(rows), args.tsne_max_points)
        print(f"t-SNE of {features.meta['label']} ({len(keep)} images, {rows.shape[1]} dimensions)", flush=True)
        tsne_panels.append({"title": panel_title(features, args.space, numbers),
                            "embedding": plots.tsne_embedding(rows[keep]),
                            "labels": features.labels[keep], "is_new": features.is_new[keep]})
        print(f"F-scores of {features.meta['label']} ({len(features.classnames)} classes x {rows.shape[1]} "
              "dimensions)", flush=True)
        scores = metrics.fscore_matrix(rows, features.labels, classes=present)
        split = int((present < features.num_base).sum()) if features.meta.get("protocol") == "base2novel" else None
        fscore_panels.append({"title": f"{features.meta['label']}: one-vs-rest ANOVA F-score of the {args.space} "
                                       f"features ({features.meta['dataset']}, epoch "
                                       f"{features.meta['checkpoint_epoch']})",
                              "scores": scores, "num_base": split})
    plots.plot_tsne(tsne_panels, classnames, os.path.join(out_dir, TSNE_FILE))
    plots.plot_fscore(fscore_panels, [classnames[c] for c in present], os.path.join(out_dir, FSCORE_FILE))


def summary_lines(runs: List[dict], space: str) -> List[str]:
    """A short table of the ``space`` numbers per run and group."""
    lines = [f"acc: the student's accuracy against the teacher's class vectors; ratio (intra/inter), silh. "
             f"(silhouette), k-NN, eff.rank: the {space} features",
             f"{'run':<28} {'group':<5} {'acc %':>6} {'ratio':>6} {'silh.':>6} {'k-NN %':>7} {'eff.rank':>8}"]

    def fmt(value, spec):
        return format(value, spec) if value is not None else "-"

    for run in runs:
        analysis = run["analysis"]
        for group, numbers in analysis["separability"][space].items():
            lines.append(f"{run['features'].meta['label'][:28]:<28} {group:<5} "
                         f"{fmt(analysis['class_vector_accuracy'].get(group), '6.2f'):>6} "
                         f"{fmt(numbers['intra_inter_ratio'], '6.3f'):>6} {fmt(numbers['silhouette'], '6.3f'):>6} "
                         f"{fmt(numbers['knn_accuracy'], '7.2f'):>7} {fmt(numbers['effective_rank'], '8.2f'):>8}")
    return lines


def analyze(args: argparse.Namespace) -> str:
    """Everything the command does; returns the output folder."""
    require_analysis_extra()
    from dassl.utils import write_json
    from tools.analysis.report import analyse

    if args.knn_k < 1:
        raise UserError(f"--knn-k must be >= 1, got {args.knn_k}")
    if len(args.opts) % 2:
        raise UserError(f"--opts must be KEY VALUE pairs, got {len(args.opts)} items: {' '.join(args.opts)}")
    out_dir = args.out or default_out(args.run_dirs)
    os.makedirs(out_dir, exist_ok=True)
    runs = extract_runs(args, out_dir)
    for run in runs:
        run["analysis"] = analyse(run["features"], knn_k=args.knn_k, progress=lambda line: print(line, flush=True))
    write_figures(runs, args, out_dir)
    record = {
        "split": args.split,
        "knn_k": args.knn_k,
        "geometry": "backbone and projected rows L2-normalised, manifold rows raw; Euclidean distances",
        "runs": [{**{key: run["features"].meta.get(key) for key in
                     ("label", "trainer", "dataset", "protocol", "split", "checkpoint_epoch", "num_base")},
                  "run_dir": os.path.abspath(run["run_dir"]), "checkpoint": run["checkpoint"],
                  "features_file": run["features_file"], **run["analysis"]} for run in runs],
    }
    write_json(record, os.path.join(out_dir, ANALYSIS_FILE))
    print("\n".join(summary_lines(runs, args.space)))
    print(f"Written to {out_dir}: {ANALYSIS_FILE}, {TSNE_FILE}, {FSCORE_FILE}, "
          f"{', '.join(run['features_file'] for run in runs)}")
    return out_dir


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Command-line entry point: 0 on success, 2 with one ``Error:`` line for an expected failure."""
    args = build_parser().parse_args(argv)
    try:
        analyze(args)
    except Exception as exc:  # noqa: BLE001  (expected failures end in one line; others keep their traceback)
        line = expected_failure_line(exc)
        if line is None:
            raise
        sys.stdout.flush()
        print(f"Error: {line}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
