#!/usr/bin/env bash
# One call on the GPU machine (torch 2.11 + CUDA 13, no network): build for
# sm_90, run every test including the CUDA ones, run the benchmarks, and print
# a short table last. Logs and results go to $OUT when set (the device tool),
# else benchmarks/out.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-benchmarks/out}
mkdir -p "$OUT"
export TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-9.0} HCAM_OPS_CUDA=1 MAX_JOBS=${MAX_JOBS:-16} PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
git log -1 --format='commit %H %cd' 2>/dev/null || true

echo "== build"
start=$(date +%s)
if ! python3 setup.py build_ext --inplace >"$OUT/build.log" 2>&1; then
  tail -40 "$OUT/build.log"; echo "BUILD FAILED"; exit 1
fi
grep -E "spill|warning" "$OUT/build.log" | grep -v "pragma" | head -5
echo "built in $(( $(date +%s) - start )) s"
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}

echo "== tests"
python3 -m pytest python_tests -q -x -p no:cacheprovider >"$OUT/tests.log" 2>&1
test_rc=$?
tail -15 "$OUT/tests.log"

echo "== model train steps (fused vs reference loss)"
python3 benchmarks/train_step.py 2>>"$OUT/bench.log" | tee "$OUT/train_step.md"

echo "== benchmarks"
python3 benchmarks/run.py --out "$OUT" "$@" 2>"$OUT/bench.log"
bench_rc=$?
echo "tests rc=$test_rc bench rc=$bench_rc"
exit $(( test_rc || bench_rc ))
