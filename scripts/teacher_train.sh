#!/usr/bin/env bash
# Train a PromptSRC ViT-L/14 teacher (labelled, 16 shots of the base classes) and install its
# checkpoint where the distillation trainers look for it.
set -euo pipefail

usage() {
    cat >&2 <<'USAGE'
usage: scripts/teacher_train.sh <dataset> <seed>
  e.g. bash scripts/teacher_train.sh oxford_pets 1
  Trains PromptSRC (ViT-L/14, 4+4 prompt tokens, depth 9) on the base classes with labels, then copies
  the final (Gaussian-aggregated) checkpoint to
    TEACHER_ROOT/<DATASET.NAME>/VLPromptLearner/model-best.pth.tar
  With XD=1 it trains the cross-dataset teacher on all classes (use imagenet) and installs it as
    TEACHER_ROOT/ImageNet-xd/VLPromptLearner_large/model.pth.tar-20
environment overrides (defaults in brackets):
  DATA          data root holding the dataset folders        [./data]
  SHOTS         labelled shots per class                      [16]
  CFG           configs/trainers/PromptSRC/<CFG>.yaml         [vit_l14_c2_ep20_batch8_4+4ctx]
  TEACHER_ROOT  where the teacher checkpoint is installed     [teacher_model]
  OUTPUT_ROOT   where the training run is written             [output]
  OVERWRITE     set to 1 to replace an installed teacher
  EXTRA_OPTS    extra 'KEY VALUE' config pairs; RUN_TAG: run-folder suffix
USAGE
    exit 2
}

[[ $# -eq 2 ]] || usage
cd "$(dirname "$0")/.."
source scripts/common.sh
require_repo_root

TRAINER=PromptSRC  # fixed: this script trains teachers only
init_run "$1" "$2" PromptSRC vit_l14_c2_ep20_batch8_4+4ctx
TEACHER_ROOT="${TEACHER_ROOT:-teacher_model}"
NAME="$(dataset_name "$DATASET")"

if [[ "${XD:-0}" == 1 ]]; then
    SUBSAMPLE=all
    DEST="${TEACHER_ROOT}/ImageNet-xd/VLPromptLearner_large/model.pth.tar-20"
    DIR="${OUTPUT_ROOT}/teacher/xd/${DATASET}/shots_${SHOTS}/${TRAINER}/${CFG}$(run_tag)/seed${SEED}"
else
    SUBSAMPLE=base
    DEST="${TEACHER_ROOT}/${NAME}/VLPromptLearner/model-best.pth.tar"
    DIR="${OUTPUT_ROOT}/teacher/base2new/${DATASET}/shots_${SHOTS}/${TRAINER}/${CFG}$(run_tag)/seed${SEED}"
fi
if [[ -e "$DEST" && "${OVERWRITE:-0}" != 1 ]]; then
    say "Skipping: a teacher is already installed at $DEST (set OVERWRITE=1 to replace it)"
    exit 0
fi
require_data "$DATA" "$DATASET"
split_extra_opts

CKPT_DIR="${DIR}/VLPromptLearner"
if [[ ! -f "${CKPT_DIR}/checkpoint" ]] || ! grep -q . "${CKPT_DIR}/checkpoint"; then
    say "Train teacher: PromptSRC ${CFG} on ${DATASET} (${SUBSAMPLE} classes, ${SHOTS} shots), seed ${SEED} -> ${DIR}"
    run_train_py "$DIR" \
        DATASET.NUM_SHOTS "$NUM_SHOTS" \
        DATASET.SUBSAMPLE_CLASSES "$SUBSAMPLE" \
        "${EXTRA[@]}"
    # Echo mode: the caller runs train.py itself, then reruns this script (without echo) to install.
    if echo_mode; then exit 0; fi
fi

# The last written checkpoint (PromptSRC's teacher config saves the last epoch, GPA weights).
[[ -f "${CKPT_DIR}/checkpoint" ]] || die "training wrote no checkpoint in ${CKPT_DIR}"
LAST="$(head -n 1 "${CKPT_DIR}/checkpoint" | tr -d '[:space:]')"
[[ -f "${CKPT_DIR}/${LAST}" ]] || die "checkpoint file ${CKPT_DIR}/${LAST} named in ${CKPT_DIR}/checkpoint is missing"
mkdir -p "$(dirname "$DEST")"
cp "${CKPT_DIR}/${LAST}" "$DEST"
say "Teacher installed: ${CKPT_DIR}/${LAST} -> ${DEST}"
