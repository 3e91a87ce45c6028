#!/usr/bin/env bash
# Cross-dataset transfer: evaluate an inductive trainer's ImageNet model (fewshot_train.sh imagenet) on a
# target dataset, all classes. Usage, checks, run folders and the train.py arguments: scripts/runs.py.
set -euo pipefail
cd "$(dirname "$0")/.."
exec "${PYTHON:-python}" -m scripts.launch xd_test "$@"
