#!/usr/bin/env bash
# The first command a newcomer runs: a complete base-to-new pipeline on a tiny fake dataset with tiny
# random CLIP weights, on the CPU, in a few minutes. Its numbers are a SMOKE RUN, not a result.
set -euo pipefail

usage() {
    cat >&2 <<'USAGE'
usage: scripts/demo.sh
  Needs no data, no weights and no GPU. Writes everything under DEMO_DIR [output/demo]:
  a fake OxfordPets-layout dataset, tiny random student/teacher CLIP weights, a teacher checkpoint in
  PromptKD's format, then runs PromptKD and PromptKD_RSM (seeds 1 and 2) through
  scripts/base2new_train.sh and train.py, and prints the results table.
environment:
  DEMO_DIR          output folder                                     [output/demo]
  DEMO_WEIGHTS_DIR  use student.pt, teacher.pt and teacher_model/ from this folder instead of random
                    weights (hook for a pretrained tiny CLIP; its INPUT_SIZE file, if present, sets
                    the image size)
  DEMO_EPOCHS       epochs per run                                    [2]
  DEMO_MODE         auto: the SynthShapes real-learning demo when its pretrained CLIPs are cached
                    (benchmarks/synthshapes), else this smoke run; smoke: always this smoke run  [auto]
USAGE
    exit 2
}

[[ $# -eq 0 ]] || usage
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python}"

die() {
    echo "error: $*" >&2
    exit 2
}

# Real-learning mode (benchmarks/synthshapes): when the cache ($AME_CACHE or ~/.cache/ame/synthshapes) holds
# the pretrained SynthShapes CLIPs (built by `bash scripts/synth_benchmark.sh`), distil on SynthShapes
# with them instead. DEMO_MODE=smoke forces the random-weight smoke run below.
if [[ "${DEMO_MODE:-auto}" != smoke ]] && "$PYTHON" -m benchmarks.synthshapes.benchmark --mode demo --check-cache > /dev/null 2>&1; then
    echo "SynthShapes pretrained tiny CLIPs found in the cache: running the real-learning demo (DEMO_MODE=smoke for the smoke run)"
    exec "$PYTHON" -m benchmarks.synthshapes.benchmark --mode demo
fi

DEMO_DIR="${DEMO_DIR:-output/demo}"
DEMO_EPOCHS="${DEMO_EPOCHS:-2}"
DATASET=oxford_pets
NAME=OxfordPets
NUM_CLASSES=6
IMAGE_SIZE=32
START=$(date +%s)

banner() {
    echo "=================================================================================="
    echo "  DEMO / SMOKE RUN: tiny fake data, tiny RANDOM weights, ${DEMO_EPOCHS} epochs."
    echo "  It shows that the pipeline runs end to end. Its accuracies mean NOTHING:"
    echo "  they are not results and must not be compared with any paper."
    echo "=================================================================================="
}
banner

# Fresh data and runs each time (only the demo's own sub-folders are removed).
rm -rf "${DEMO_DIR}/data" "${DEMO_DIR}/runs" "${DEMO_DIR}/weights"
mkdir -p "${DEMO_DIR}"

echo "[1/4] Fake dataset (${NAME} layout, ${NUM_CLASSES} classes) -> ${DEMO_DIR}/data"
"$PYTHON" tools/make_fake_dataset.py "$NAME" --root "${DEMO_DIR}/data" --num-classes "$NUM_CLASSES" \
    --train-per-class 4 --val-per-class 1 --test-per-class 3 --image-size "$IMAGE_SIZE" > /dev/null

if [[ -n "${DEMO_WEIGHTS_DIR:-}" ]]; then
    echo "[2/4] Weights from DEMO_WEIGHTS_DIR=${DEMO_WEIGHTS_DIR}"
    for f in student.pt teacher.pt teacher_model; do
        [[ -e "${DEMO_WEIGHTS_DIR}/$f" ]] || die "DEMO_WEIGHTS_DIR lacks $f (expected student.pt, teacher.pt, teacher_model/)"
    done
    WEIGHTS="${DEMO_WEIGHTS_DIR}"
    [[ -f "${WEIGHTS}/INPUT_SIZE" ]] && IMAGE_SIZE="$(tr -d '[:space:]' < "${WEIGHTS}/INPUT_SIZE")"
else
    echo "[2/4] Tiny random CLIP weights + a PromptKD-format teacher checkpoint -> ${DEMO_DIR}/weights"
    WEIGHTS="${DEMO_DIR}/weights"
    CLASSNAMES="$("$PYTHON" - "${DEMO_DIR}/data/oxford_pets/split_zhou_OxfordPets.json" <<'PY'
import json, sys
split = json.load(open(sys.argv[1]))
names = {label: name for _, label, name in split["train"]}
print(" ".join(names[i] for i in sorted(names)))
PY
)"
    # shellcheck disable=SC2086  # class names contain no spaces (underscored)
    "$PYTHON" tools/make_tiny_weights.py "$WEIGHTS" --dataset "$NAME" --classnames $CLASSNAMES > /dev/null
fi

echo "[3/4] Base-to-new distillation: PromptKD and PromptKD_RSM, seeds 1 and 2"
export DATA="${DEMO_DIR}/data"
export OUTPUT_ROOT="${DEMO_DIR}/runs"
export TEACHER_ROOT="${WEIGHTS}/teacher_model"
export RUN_TAG=demo
export EXTRA_OPTS="MODEL.BACKBONE.WEIGHTS ${WEIGHTS}/student.pt TRAINER.PROMPTKD.TEACHER_WEIGHTS ${WEIGHTS}/teacher.pt INPUT.SIZE (${IMAGE_SIZE},${IMAGE_SIZE}) OPTIM.MAX_EPOCH ${DEMO_EPOCHS} DATALOADER.NUM_WORKERS 0 DATALOADER.TRAIN_X.BATCH_SIZE 4 DATALOADER.TEST.BATCH_SIZE 32 TRAIN.PRINT_FREQ 10 TRAINER.PROMPTKD.PROMPT_DEPTH_VISION 2 TRAINER.PROMPTKD.PROMPT_DEPTH_TEXT 2"
for TR in PromptKD PromptKD_RSM; do
    for SEED in 1 2; do
        LOG="${DEMO_DIR}/runs/${TR}_seed${SEED}.console.txt"
        mkdir -p "$(dirname "$LOG")"
        printf '  %-13s seed %s ... ' "$TR" "$SEED"
        if TRAINER="$TR" bash scripts/base2new_train.sh "$DATASET" "$SEED" > "$LOG" 2>&1; then
            echo "done"
        else
            echo "FAILED (log: $LOG)"
            tail -n 20 "$LOG" >&2
            exit 1
        fi
    done
done

echo "[4/4] Results table (tools/parse_results.py ${OUTPUT_ROOT})"
echo
"$PYTHON" tools/parse_results.py "$OUTPUT_ROOT" --which best
banner
echo "Finished in $(( $(date +%s) - START )) s. Run logs: ${OUTPUT_ROOT}/base2new/train_base/${DATASET}/.../log.txt"
