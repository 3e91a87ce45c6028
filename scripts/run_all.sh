#!/usr/bin/env bash
# Every dataset x seed x shots setting for one protocol, then the results table; or (table1, table2)
# every run of the AME paper's Table 1 / 2 rows, then the paper's numbers beside ours. Resumable: finished
# runs (results.json present) are skipped; a failed run is reported and the loop goes on.
# Usage, checks, run folders and the train.py arguments: scripts/runs.py (run by scripts/launch.py).
set -euo pipefail
cd "$(dirname "$0")/.."
exec "${PYTHON:-python}" -m scripts.launch run_all "$@"
