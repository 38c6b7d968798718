#!/usr/bin/env bash
# Set-up, then the benchmark report on whatever device is here: fused vs
# reference vs torch.compile(reference), written to benchmarks/out/ and printed.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec "${PYTHON:-python3}" benchmarks/run.py "$@"
