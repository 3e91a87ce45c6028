#!/usr/bin/env bash
# Evaluate a trained base-to-new run (written by base2new_train.sh) on the base and new classes.
set -euo pipefail

usage() {
    cat >&2 <<'USAGE'
usage: scripts/base2new_test.sh <dataset> <seed>
  Evaluates output/base2new/train_base/<dataset>/shots_<SHOTS>/<TRAINER>/<CFG>/seed<seed>:
  Base = TEST.SPLIT val (base classes), New = TEST.SPLIT test (new classes).
environment overrides: DATA, TRAINER, SHOTS, CFG, TEACHER_ROOT, OUTPUT_ROOT, EXTRA_OPTS, RUN_TAG
  (the same values as for base2new_train.sh), and
  LOAD_EPOCH    evaluate model.pth.tar-<LOAD_EPOCH> instead of model-best.pth.tar
USAGE
    exit 2
}

[[ $# -eq 2 ]] || usage
cd "$(dirname "$0")/.."
source scripts/common.sh
require_repo_root

init_run "$1" "$2" PromptKD_RSM vit_b16_c2_ep20_batch8_4+4ctx

TAG="$(run_tag)"
MODEL_DIR="${OUTPUT_ROOT}/base2new/train_base/${DATASET}/shots_${SHOTS}/${TRAINER}/${CFG}${TAG}/seed${SEED}"
[[ -d "$MODEL_DIR" ]] || die "no trained run at $MODEL_DIR (train it with scripts/base2new_train.sh $DATASET $SEED)"
require_data "$DATA" "$DATASET"

split_extra_opts
LOAD_OPTS=()
[[ -n "${LOAD_EPOCH:-}" ]] && LOAD_OPTS=(--load-epoch "$LOAD_EPOCH")
teacher_opts

for PART in base new; do
    if [[ "$PART" == base ]]; then SPLIT=val; else SPLIT=test; fi
    DIR="${OUTPUT_ROOT}/base2new/test_${PART}/${DATASET}/shots_${SHOTS}/${TRAINER}/${CFG}${TAG}/seed${SEED}"
    say "Evaluate ${PART} classes (TEST.SPLIT ${SPLIT}) of ${MODEL_DIR} -> ${DIR}"
    run_train_py "$DIR" \
        --model-dir "$MODEL_DIR" \
        --eval-only "${LOAD_OPTS[@]}" \
        DATASET.NUM_SHOTS "$NUM_SHOTS" \
        TRAINER.MODAL base2novel \
        TEST.SPLIT "$SPLIT" \
        "${TEACHER_OPTS[@]}" "${EXTRA[@]}"
done
