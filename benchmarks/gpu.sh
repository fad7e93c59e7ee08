#!/usr/bin/env bash
# Run the GPU benchmark (benchmarks/gpu.py) with this checkout on the import path; arguments pass through.
#
#   bash benchmarks/gpu.sh --compile --output "$OUT"     # one NVIDIA GPU, a few minutes
#   bash benchmarks/gpu.sh --self-test --output /tmp/b   # CPU check with tiny models
#   PYTHON=.venv/bin/python bash benchmarks/gpu.sh ...   # another interpreter than python3
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export PYTHONPATH="${root}${PYTHONPATH:+:${PYTHONPATH}}"
export PYTHONUNBUFFERED=1
exec "${PYTHON:-python3}" "${root}/benchmarks/gpu.py" "$@"
