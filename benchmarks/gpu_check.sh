#!/usr/bin/env bash
# The prepared GPU check (issue 30), one script for the short time a GPU machine is lent:
#   1. the tests marked `cuda` (every family on --device cuda against the CPU; float16 with its
#      gradient scaler; bfloat16),
#   2. benchmarks/gpu_check.py: the bundled networks' training speed on the GPU, one markdown
#      table (benchmarks/results/gpu_check.md, or the path given as $1).
# Without a GPU it says so and exits 0. Bounded: at most 8 minutes in all.
#     bash benchmarks/gpu_check.sh
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:-benchmarks/results/gpu_check.md}
if ! python -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    echo "gpu_check: no GPU here (torch.cuda.is_available() is False): nothing to measure"
    exit 0
fi
mkdir -p "$(dirname "$out")"
status=0
timeout 180 python -m pytest -q -m cuda -p no:cacheprovider tests/test_cuda.py || status=$?
timeout 300 python benchmarks/gpu_check.py --out "$out" || status=$?
echo "gpu_check: table in $out (exit $status)"
exit $status
