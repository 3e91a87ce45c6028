#!/usr/bin/env bash
# Evaluate a trained base-to-new run (written by base2new_train.sh) on the base and new classes.
# Usage, checks, run folders and the train.py arguments: scripts/runs.py (run by scripts/launch.py).
set -euo pipefail
cd "$(dirname "$0")/.."
exec "${PYTHON:-python}" -m scripts.launch base2new_test "$@"
