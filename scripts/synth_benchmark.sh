#!/usr/bin/env bash
# SynthShapes: the whole PromptKD / AME benchmark in miniature on CPU (benchmarks/synthshapes/benchmark.py).
#   bash scripts/synth_benchmark.sh            full run: 2 datasets x 3 seeds, omega sweep, tables, plots (about 10 minutes on 2 cores)
#   bash scripts/synth_benchmark.sh --quick    CI-sized run (fewer pretraining steps, 1 seed, omega 0 and 50; about 5 minutes)
#   bash scripts/synth_benchmark.sh --paper    the AME paper's regime (PromptKD's SGD, batch 8, 20 epochs) on the full
#                                              run's cached CLIPs and teachers: PromptKD, PromptKD_RSM, Simple, Simple_RSM
#                                              at 4/16/30/full shots, seeds 1-3, omega sweep, the opt-in RSM variants and
#                                              the large-batch rule: 90 runs, about 70 minutes on 2 shared cores
#                                              (benchmarks/synthshapes/paper.py)
#   bash scripts/synth_benchmark.sh --paper-quick   a cut of --paper (2 seeds, 4 and 16 shots, omegas 0/5/50/100,
#                                              the variants and the batch rule; 38 runs) for machines where --paper
#                                              does not fit
#   bash scripts/synth_benchmark.sh --baselines     the baseline table on SynthShapesNoisy, seeds 1-3, on the full run's
#                                              cached CLIPs, teachers and zero-shot runs: zero-shot CLIP, CoOp, CoCoOp,
#                                              IVLP, MaPLe, PromptSRC, PromptKD, PromptKD_RSM, KDPL, KDPL_RSM, each on
#                                              the student CLIP (benchmarks/synthshapes/baselines.py)
#   bash scripts/synth_benchmark.sh --baselines-tiny   the same pipeline on the CI-sized tiny plan (a pipeline check)
# Other options: --cache DIR (default $AME_CACHE or ~/.cache/ame/synthshapes), --output DIR
# (default output/synthshapes/<mode>), --workers N, --threads N, --seeds S ... ; see --help.
# Pretrained CLIPs, datasets and teachers are cached and reused; finished runs are skipped on a rerun.
set -euo pipefail
cd "$(dirname "$0")/.."
[[ -f train.py ]] || { echo "error: run from a checkout of the repository (train.py not found)" >&2; exit 2; }
exec "${PYTHON:-python}" -m benchmarks.synthshapes.benchmark "$@"
