#!/usr/bin/env bash
# The one-command GPU check: GPU-marked tests, precision modes against fp32, the real-size training
# benchmark (PromptKD / PromptKD_RSM, batch 8 and 64, fp16 and bf16), a 1-GPU torchrun run; one JSON
# summary (--out FILE, else $DEVICE_CHECK_OUT, else output/device_check/summary.json).
# Without a CUDA device it prints one line and exits 0; --cpu-dry-run runs every stage on the CPU with
# tiny sizes. The stages are in tools/device_check.py; the whole check is capped at 8 minutes.
set -euo pipefail
cd "$(dirname "$0")/.."
exec timeout --signal=INT --kill-after=20 480 "${PYTHON:-python}" tools/device_check.py "$@"
