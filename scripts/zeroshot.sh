#!/usr/bin/env bash
# Zero-shot CLIP with the dataset's hand-written template (CoOp's ZeroshotCLIP); no training.
# Usage, checks, run folders and the train.py arguments: scripts/runs.py (run by scripts/launch.py).
set -euo pipefail
cd "$(dirname "$0")/.."
exec "${PYTHON:-python}" -m scripts.launch zeroshot "$@"
