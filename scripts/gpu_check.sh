#!/usr/bin/env bash
# One call on the GPU machine: set-up as scripts/setup.sh does it (offline:
# the packages that machine lacks travel as wheels in .whl/, see
# scripts/gpu_wheels.sh), the build for the GPU present, every test (the CUDA
# ones run), the model train steps, the benchmarks and the check of the
# traffic model against ncu (benchmarks/ncu_traffic.py). Nothing stops at the
# first failure; every log is kept in $OUT (the device tool) or benchmarks/out.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-benchmarks/out}
mkdir -p "$OUT"
export HCAM_OPS_CUDA=1 MAX_JOBS=${MAX_JOBS:-16} PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$OUT/device.txt" || true
git log -1 --format='commit %H %cd' 2>/dev/null | tee -a "$OUT/device.txt" || true

echo "== set-up and build"
start=$(date +%s)
if [ -d .whl ]; then
  # The machine has no network: the wheels are the only index.
  python3 -m pip install -q --no-index --find-links .whl .whl/*.whl >"$OUT/wheels.log" 2>&1 || tail -5 "$OUT/wheels.log"
  export HCAM_OPS_WHEELS=$PWD/.whl
fi
if ! bash scripts/setup.sh >"$OUT/build.log" 2>&1; then
  tail -40 "$OUT/build.log"; echo "SET-UP FAILED"; exit 1
fi
grep -E "spill|warning" "$OUT/build.log" | grep -v "pragma" | head -5
tail -1 "$OUT/build.log"
echo "set-up and build in $(( $(date +%s) - start )) s"

echo "== tests"
python3 -m pytest python_tests -q -p no:cacheprovider -rs >"$OUT/tests.log" 2>&1
test_rc=$?
grep -E "^(FAILED|ERROR)" "$OUT/tests.log" | head -30
tail -3 "$OUT/tests.log"

echo "== model train steps (fused vs reference loss)"
python3 benchmarks/train_step.py 2>"$OUT/train_step.err" | tee "$OUT/train_step.md"

echo "== benchmarks"
python3 benchmarks/run.py --out "$OUT" "$@" 2>"$OUT/bench.err"
bench_rc=$?

echo "== memory traffic: the emulator's model beside ncu's dram bytes (docs/traffic.md)"
if command -v ncu >/dev/null 2>&1 || [ -x /usr/local/cuda/bin/ncu ]; then
  python3 benchmarks/ncu_traffic.py --model benchmarks/results/traffic.json --out "$OUT" 2>"$OUT/ncu_traffic.err" ||
    tail -5 "$OUT/ncu_traffic.err"
else
  echo "ncu not found: the traffic model is not checked"
fi
echo "tests rc=$test_rc bench rc=$bench_rc"
exit $(( test_rc || bench_rc ))
