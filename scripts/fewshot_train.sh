#!/usr/bin/env bash
# Few-shot learning with an inductive trainer (CoOp, CoCoOp, IVLP, MaPLe, PromptSRC, KDPL): SHOTS shots
# of every class. Usage, checks, run folders and the train.py arguments: scripts/runs.py (run by scripts/launch.py).
set -euo pipefail
cd "$(dirname "$0")/.."
exec "${PYTHON:-python}" -m scripts.launch fewshot_train "$@"
