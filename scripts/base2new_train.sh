#!/usr/bin/env bash
# Base-to-new distillation: train one run and evaluate Base (val) and New (test) in it.
set -euo pipefail

usage() {
    cat >&2 <<'USAGE'
usage: scripts/base2new_train.sh <dataset> <seed>
  e.g. bash scripts/base2new_train.sh oxford_pets 1
environment overrides (defaults in brackets):
  DATA          data root holding the dataset folders        [./data]
  TRAINER       PromptKD_RSM | PromptKD | Simple | Simple_RSM [PromptKD_RSM]
  SHOTS         unlabelled shots per class, or 'full'         [16]
  CFG           configs/trainers/<TRAINER>/<CFG>.yaml         [vit_b16_c2_ep20_batch8_4+4ctx]
  KD_WEIGHT     KD loss weight                                [200.0 for fgvc_aircraft, oxford_flowers, dtd; else 1000.0]
  TEACHER_ROOT  folder with <DATASET.NAME>/VLPromptLearner/   [the config default, teacher_model]
  OUTPUT_ROOT   where runs are written                        [output]
  EXTRA_OPTS    extra 'KEY VALUE' config pairs (no spaces inside values)
  RUN_TAG       suffix for the run folder (default: derived from EXTRA_OPTS)
A run whose results.json exists is skipped.
USAGE
    exit 2
}

[[ $# -eq 2 ]] || usage
cd "$(dirname "$0")/.."
source scripts/common.sh
require_repo_root

init_run "$1" "$2" PromptKD_RSM vit_b16_c2_ep20_batch8_4+4ctx
KD_WEIGHT="${KD_WEIGHT:-$(kd_weight "$DATASET")}"

DIR="${OUTPUT_ROOT}/base2new/train_base/${DATASET}/shots_${SHOTS}/${TRAINER}/${CFG}$(run_tag)/seed${SEED}"
skip_if_done "$DIR"
require_data "$DATA" "$DATASET"

split_extra_opts
teacher_opts

say "Run: ${TRAINER} on ${DATASET}, seed ${SEED}, shots ${SHOTS}, KD_WEIGHT ${KD_WEIGHT} -> ${DIR}"
run_train_py "$DIR" \
    DATASET.NUM_SHOTS "$NUM_SHOTS" \
    TRAINER.MODAL base2novel \
    TRAINER.PROMPTKD.TEMPERATURE 1.0 \
    TRAINER.PROMPTKD.KD_WEIGHT "$KD_WEIGHT" \
    "${TEACHER_OPTS[@]}" "${EXTRA[@]}"
