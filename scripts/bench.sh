#!/usr/bin/env bash
# Set-up, then the benchmark report on whatever device is here: fused vs
# reference vs torch.compile(reference), written to benchmarks/out/
# (results.md, results.json, results.png) and printed; progress on stderr.
# Arguments go to benchmarks/run.py, e.g. `bash scripts/bench.sh --threads 1,2`
# (`python3 benchmarks/run.py --help` lists them).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec "${PYTHON:-python3}" benchmarks/run.py "$@"
