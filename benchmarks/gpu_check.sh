#!/usr/bin/env bash
# One command that runs every CUDA path once on small settings and writes gpu_check_runs/gpu_check.json
# plus a PASS/FAIL/SKIP line per check (see benchmarks/README.md). Arguments go to benchmarks/gpu_check.py:
#   bash benchmarks/gpu_check.sh                        # all checks on cuda
#   bash benchmarks/gpu_check.sh --device cpu --quick   # the test suite's smoke test
set -euo pipefail
cd "$(dirname "$0")/.."
exec python benchmarks/gpu_check.py "$@"
