#!/usr/bin/env bash
# Cross-dataset training. Distillation trainers: the ImageNet-xd teacher distilled on one target dataset, all
# its classes. Supervised trainers (TRAINER=CoOp ...): the one ImageNet source run (all classes, SHOTS shots),
# which xd_test.sh and dg_test.sh then evaluate.
# Usage, checks, run folders and the train.py arguments: scripts/runs.py (run by scripts/launch.py).
set -euo pipefail
cd "$(dirname "$0")/.."
exec "${PYTHON:-python}" -m scripts.launch xd_train "$@"
