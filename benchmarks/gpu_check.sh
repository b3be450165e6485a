#!/usr/bin/env bash
# The GPU readiness check (benchmarks/gpu_check.py): DFF-scale SynthDFF, prepare, and every training
# loop on the device, one JSON line per figure; exits non-zero if any section crashed.
#   bash benchmarks/gpu_check.sh               # on a machine with an NVIDIA GPU (<= 8 minutes)
#   bash benchmarks/gpu_check.sh --cpu-smoke   # the same code paths at toy size on a CPU
set -euo pipefail
cd "$(dirname "$0")/.."
python -c "import dfflab" 2>/dev/null || pip install -q -e .
exec timeout 480 python benchmarks/gpu_check.py "$@"
