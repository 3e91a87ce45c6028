#!/usr/bin/env bash
# The first command a newcomer runs. By default a REAL-LEARNING run (benchmarks/synthshapes/demo.py): tiny CLIPs
# pretrained in seconds on a synthetic world of coloured shapes, a prompt-tuned teacher, and PromptKD /
# PromptKD_RSM distilling it into the student without labels; about two minutes on 2 CPU cores from an empty
# cache. DEMO_MODE=smoke runs the older pipeline smoke test on random weights instead (numbers meaningless).
set -euo pipefail

usage() {
    cat >&2 <<'USAGE'
usage: scripts/demo.sh
  Needs no data, no weights and no GPU.
  Default (DEMO_MODE=real): the SynthShapes real-learning demo. Renders a 10-class SynthShapes dataset,
  pretrains a teacher and a (deliberately barely trained) student CLIP, prompt-tunes the teacher, distils
  it with PromptKD and PromptKD_RSM (omega 50, seeds 1 and 2), then prints Base / New / HM, the H(M) trace
  and what the numbers mean. Pretrained CLIPs and the teacher are cached ($AME_CACHE or
  ~/.cache/ame/synthshapes); results go to output/synthshapes/demo (summary.md, entropy_curves.png).
environment:
  DEMO_MODE         real: the run above  [real]
                    smoke: a pipeline smoke run on a tiny fake OxfordPets-layout dataset with tiny RANDOM
                    weights (scripts/base2new_train.sh end to end; its accuracies mean nothing)
  Smoke mode only:
  DEMO_DIR          output folder                                     [output/demo]
  DEMO_WEIGHTS_DIR  use student.pt, teacher.pt and teacher_model/ from this folder instead of random
                    weights (its INPUT_SIZE file, if present, sets the image size)
  DEMO_EPOCHS       epochs per run                                    [2]
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

case "${DEMO_MODE:-real}" in
    real)
        echo "SynthShapes real-learning demo (DEMO_MODE=smoke for the random-weight pipeline smoke run)"
        exec "$PYTHON" -m benchmarks.synthshapes.demo ;;
    smoke) ;;
    *) die "DEMO_MODE must be real or smoke, got '${DEMO_MODE}'" ;;
esac

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
