#!/usr/bin/env bash
# Cross-dataset distillation: the ImageNet-xd teacher, one target dataset, all its classes.
# Usage, checks, run folders and the train.py arguments: scripts/runs.py (run by scripts/launch.py).
set -euo pipefail
cd "$(dirname "$0")/.."
exec "${PYTHON:-python}" -m scripts.launch xd_train "$@"
