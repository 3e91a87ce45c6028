#!/usr/bin/env bash
# Train a PromptSRC ViT-L/14 teacher (labelled, 16 shots of the base classes) and install its
# checkpoint where the distillation trainers look for it.
# Usage, checks, run folders and the train.py arguments: scripts/runs.py (run by scripts/launch.py).
set -euo pipefail
cd "$(dirname "$0")/.."
exec "${PYTHON:-python}" -m scripts.launch teacher_train "$@"
