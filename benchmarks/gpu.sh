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
# the project's venv when there is one (make install), else the machine's python3 (a GPU image with torch)
default_python=python3
[ -x "${root}/.venv/bin/python" ] && default_python="${root}/.venv/bin/python"
exec "${PYTHON:-${default_python}}" "${root}/benchmarks/gpu.py" "$@"
