#!/usr/bin/env bash
# Zero-shot CLIP with the dataset's hand-written template (CoOp's ZeroshotCLIP); no training.
set -euo pipefail

usage() {
    cat >&2 <<'USAGE'
usage: scripts/zeroshot.sh <dataset> [cfg]
  cfg: configs/trainers/CoOp/<cfg>.yaml, one of vit_b16 (default), vit_b32, rn50, rn101
  e.g. bash scripts/zeroshot.sh oxford_pets vit_b16
environment overrides (defaults in brackets):
  DATA          data root holding the dataset folders   [./data]
  MODE          base2new: evaluate base and new classes and write results.json (Base / New / HM);
                all: one evaluation over all classes    [base2new]
  OUTPUT_ROOT   where runs are written                   [output]
  EXTRA_OPTS    extra 'KEY VALUE' config pairs (e.g. MODEL.BACKBONE.WEIGHTS path/to/ViT-B-16.pt)
A run whose results.json exists is skipped, and so is a part (base, new, all) whose zeroshot.json exists.
USAGE
    exit 2
}

[[ $# -eq 1 || $# -eq 2 ]] || usage
cd "$(dirname "$0")/.."
source scripts/common.sh
require_repo_root

DATASET="$1"
CFG="${2:-vit_b16}"
require_dataset_config "$DATASET"
TRAINER=ZeroshotCLIP
DATA="${DATA:-./data}"
MODE="${MODE:-base2new}"
OUTPUT_ROOT="${OUTPUT_ROOT:-output}"
require_trainer_config CoOp "$CFG"
case "$MODE" in base2new) PARTS=(base new) ;; all) PARTS=(all) ;; *) die "MODE must be base2new or all, got '$MODE'" ;; esac

ROOT_DIR="${OUTPUT_ROOT}/zeroshot/${DATASET}/${TRAINER}/${CFG}$(run_tag)"
skip_if_done "$ROOT_DIR"
require_data "$DATA" "$DATASET"
split_extra_opts

for PART in "${PARTS[@]}"; do
    DIR="${ROOT_DIR}/${PART}"
    if [[ -f "${DIR}/zeroshot.json" ]]; then
        say "Zero-shot CLIP (${CFG}) on ${DATASET}, ${PART} classes: already evaluated in ${DIR}"
        continue
    fi
    say "Zero-shot CLIP (${CFG}) on ${DATASET}, ${PART} classes -> ${DIR}"
    train_py \
        --root "$DATA" \
        --trainer "$TRAINER" \
        --dataset-config-file "configs/datasets/${DATASET}.yaml" \
        --config-file "configs/trainers/CoOp/${CFG}.yaml" \
        --output-dir "$DIR" \
        --eval-only \
        DATASET.SUBSAMPLE_CLASSES "$PART" \
        "${EXTRA[@]}"
done
# Echo mode: the caller runs the printed evaluations, then reruns this script (without echo) for results.json.
if echo_mode; then exit 0; fi

# One results.json for tools/parse_results.py (zero-shot has no epochs: best = last).
"$PYTHON" - "$ROOT_DIR" "$MODE" <<'PY'
import sys
from trainers.results import write_zeroshot_results
try:
    path, entry = write_zeroshot_results(sys.argv[1], sys.argv[2])
except FileNotFoundError as error:
    sys.exit(f"error: {error}")
print(f"Zero-shot result written to {path}: {entry}")
PY
