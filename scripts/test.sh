#!/usr/bin/env bash
# Set-up, then the whole test suite (CUDA tests run where a GPU is, and say why
# they skip where none is).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
"${PYTHON:-python3}" -m pytest python_tests -q "$@"
