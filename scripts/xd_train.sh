#!/usr/bin/env bash
# Cross-dataset distillation: the ImageNet-xd teacher, one target dataset, all its classes.
set -euo pipefail

usage() {
    cat >&2 <<'USAGE'
usage: scripts/xd_train.sh <dataset> <seed>
  e.g. bash scripts/xd_train.sh dtd 1
environment overrides (defaults in brackets):
  DATA          data root holding the dataset folders        [./data]
  TRAINER       PromptKD_RSM | PromptKD | Simple | Simple_RSM [PromptKD_RSM]
  SHOTS         unlabelled shots per class, or 'full'         [16]
  CFG           configs/trainers/<TRAINER>/<CFG>.yaml         [vit_b16_c2_ep20_batch8_4+4ctx_cross_datasets]
  KD_WEIGHT     KD loss weight                                [1000.0]
  TEACHER_ROOT  folder holding ImageNet-xd/VLPromptLearner_large/  [the config default, teacher_model]
  OUTPUT_ROOT   where runs are written                        [output]
  EXTRA_OPTS    extra 'KEY VALUE' config pairs; RUN_TAG: run-folder suffix
A run whose results.json exists is skipped.
USAGE
    exit 2
}

[[ $# -eq 2 ]] || usage
cd "$(dirname "$0")/.."
source scripts/common.sh
require_repo_root

init_run "$1" "$2" PromptKD_RSM vit_b16_c2_ep20_batch8_4+4ctx_cross_datasets
KD_WEIGHT="${KD_WEIGHT:-1000.0}"

DIR="${OUTPUT_ROOT}/xd/train/${DATASET}/shots_${SHOTS}/${TRAINER}/${CFG}$(run_tag)/seed${SEED}"
skip_if_done "$DIR"
require_data "$DATA" "$DATASET"

split_extra_opts
teacher_opts

say "Run (cross-dataset): ${TRAINER} on ${DATASET}, seed ${SEED}, shots ${SHOTS} -> ${DIR}"
run_train_py "$DIR" \
    DATASET.NUM_SHOTS "$NUM_SHOTS" \
    DATASET.SUBSAMPLE_CLASSES all \
    TRAINER.MODAL cross \
    TRAINER.PROMPTKD.TEMPERATURE 1.0 \
    TRAINER.PROMPTKD.KD_WEIGHT "$KD_WEIGHT" \
    "${TEACHER_OPTS[@]}" "${EXTRA[@]}"
