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

DATASET="$1"
SEED="$2"
require_seed "$SEED"
require_dataset_config "$DATASET"

DATA="${DATA:-./data}"
TRAINER="${TRAINER:-PromptKD_RSM}"
SHOTS="${SHOTS:-16}"
CFG="${CFG:-vit_b16_c2_ep20_batch8_4+4ctx_cross_datasets}"
KD_WEIGHT="${KD_WEIGHT:-1000.0}"
OUTPUT_ROOT="${OUTPUT_ROOT:-output}"
NUM_SHOTS="$(shots_value "$SHOTS")"
require_trainer_config "$TRAINER" "$CFG"

DIR="${OUTPUT_ROOT}/xd/train/${DATASET}/shots_${SHOTS}/${TRAINER}/${CFG}$(run_tag)/seed${SEED}"
skip_if_done "$DIR"
require_data "$DATA" "$DATASET"

split_extra_opts
TEACHER_OPTS=()
[[ -n "${TEACHER_ROOT:-}" ]] && TEACHER_OPTS=(TRAINER.PROMPTKD.TEACHER_ROOT "$TEACHER_ROOT")

echo "Run (cross-dataset): ${TRAINER} on ${DATASET}, seed ${SEED}, shots ${SHOTS} -> ${DIR}"
"$PYTHON" train.py \
    --root "$DATA" \
    --seed "$SEED" \
    --trainer "$TRAINER" \
    --dataset-config-file "configs/datasets/${DATASET}.yaml" \
    --config-file "configs/trainers/${TRAINER}/${CFG}.yaml" \
    --output-dir "$DIR" \
    DATASET.NUM_SHOTS "$NUM_SHOTS" \
    DATASET.SUBSAMPLE_CLASSES all \
    TRAINER.MODAL cross \
    TRAINER.PROMPTKD.TEMPERATURE 1.0 \
    TRAINER.PROMPTKD.KD_WEIGHT "$KD_WEIGHT" \
    "${TEACHER_OPTS[@]}" "${EXTRA[@]}"
