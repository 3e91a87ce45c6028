#!/usr/bin/env bash
# Domain generalisation: evaluate an inductive trainer's ImageNet model (fewshot_train.sh imagenet) on
# ImageNet-V2 / -Sketch / -A / -R. Usage, checks, run folders and the train.py arguments: scripts/runs.py.
set -euo pipefail
cd "$(dirname "$0")/.."
exec "${PYTHON:-python}" -m scripts.launch dg_test "$@"
