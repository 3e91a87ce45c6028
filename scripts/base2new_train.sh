#!/usr/bin/env bash
# Base-to-new distillation: train one run and evaluate Base (val) and New (test) in it.
# Usage, checks, run folders and the train.py arguments: scripts/runs.py (run by scripts/launch.py).
set -euo pipefail
cd "$(dirname "$0")/.."
exec "${PYTHON:-python}" -m scripts.launch base2new_train "$@"
