#!/usr/bin/env bash
# Every dataset x seed x shots setting for one protocol, then the results table. Resumable: finished
# runs (results.json present) are skipped; a failed run is reported and the loop goes on.
set -euo pipefail

usage() {
    cat >&2 <<'USAGE'
usage: scripts/run_all.sh [base2new|xd]
environment overrides (defaults in brackets):
  DATASETS      space-separated dataset keys   [the 11 base-to-new datasets; xd: the 10 targets]
  SEEDS         space-separated seeds          [1 2 3]
  SHOTS_LIST    space-separated shot settings  [16]
  TRAINERS      space-separated trainers       [PromptKD_RSM]
  plus everything base2new_train.sh / xd_train.sh read (DATA, CFG, TEACHER_ROOT, OUTPUT_ROOT, EXTRA_OPTS, ...)
USAGE
    exit 2
}

[[ $# -le 1 ]] || usage
PROTOCOL="${1:-base2new}"
case "$PROTOCOL" in
    base2new) SCRIPT=scripts/base2new_train.sh
              DEFAULT_DATASETS="imagenet caltech101 oxford_pets stanford_cars oxford_flowers food101 fgvc_aircraft sun397 dtd eurosat ucf101" ;;
    xd) SCRIPT=scripts/xd_train.sh
        DEFAULT_DATASETS="caltech101 oxford_pets stanford_cars oxford_flowers food101 fgvc_aircraft sun397 dtd eurosat ucf101" ;;
    -h | --help | *) usage ;;
esac
cd "$(dirname "$0")/.."
source scripts/common.sh
require_repo_root

read -r -a DATASET_LIST <<< "${DATASETS:-$DEFAULT_DATASETS}"
read -r -a SEED_LIST <<< "${SEEDS:-1 2 3}"
read -r -a SHOT_LIST <<< "${SHOTS_LIST:-16}"
read -r -a TRAINER_LIST <<< "${TRAINERS:-PromptKD_RSM}"
OUTPUT_ROOT="${OUTPUT_ROOT:-output}"
export OUTPUT_ROOT

FAILED=()
for TR in "${TRAINER_LIST[@]}"; do
    for SH in "${SHOT_LIST[@]}"; do
        for DS in "${DATASET_LIST[@]}"; do
            for SD in "${SEED_LIST[@]}"; do
                echo "=== ${PROTOCOL}: ${TR} ${DS} shots=${SH} seed=${SD}"
                if ! TRAINER="$TR" SHOTS="$SH" bash "$SCRIPT" "$DS" "$SD"; then
                    FAILED+=("${TR} ${DS} shots=${SH} seed=${SD}")
                fi
            done
        done
    done
done

echo
"$PYTHON" tools/parse_results.py "$OUTPUT_ROOT" || true
if (( ${#FAILED[@]} )); then
    echo "Failed runs (${#FAILED[@]}); rerun this script to retry them:" >&2
    printf '  %s\n' "${FAILED[@]}" >&2
    exit 1
fi
