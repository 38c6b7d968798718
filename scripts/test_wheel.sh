#!/usr/bin/env bash
# A built wheel tested as a user gets it (docs/wheels.md): a fresh virtualenv,
# the torch release the wheel was built against, the wheel with its extras (no
# -e, no source tree on sys.path), then the test suite against the installed
# package, run from a temporary directory holding a copy of the tests.
#   bash scripts/test_wheel.sh WHEEL [pytest arguments...]   (default: -q)
#   HCAM_OPS_VENV=DIR     the virtualenv (default: a new one, removed after); reused if it exists
#   HCAM_OPS_EXTRAS       the extras installed with the wheel (default: all,test)
#   HCAM_OPS_TEST_DIRS    the test directories copied and run (default: python_tests benchmarks)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ $# -lt 1 ] || [ ! -f "$1" ] || [[ "$(basename "$1")" != hcam_ops-*.whl ]]; then
  echo "test_wheel.sh: the first argument must be an hcam_ops wheel file (scripts/build_wheel.sh makes one), got '${1:-}'" >&2
  exit 2
fi
WHEEL=$(realpath "$1")
shift
[ $# -gt 0 ] || set -- -q

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
VENV=${HCAM_OPS_VENV:-$tmp/venv}
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
VPY=$VENV/bin/python
# The torch the wheel was built against (its hcam_ops/_build.py); the same
# release is installed (pip finds it in its index or cache, as a user's does).
BUILT=$("$VPY" - "$WHEEL" <<'EOF'
import re, sys, zipfile
text = zipfile.ZipFile(sys.argv[1]).read("hcam_ops/_build.py").decode()
print(re.search(r"TORCH_VERSION = '([^']+)'", text).group(1))
EOF
)
release=${BUILT%%+*}
# --no-compile: no .pyc for torch's thousands of modules (minutes on a small
# machine); Python writes those it imports.
PIP=("$VPY" -m pip install -q --no-compile)
if [ "$("$VPY" -c 'import torch; print(torch.__version__)' 2>/dev/null)" != "$BUILT" ]; then
  "${PIP[@]}" "torch==$release"
fi
"${PIP[@]}" --force-reinstall --no-deps "$WHEEL"
"${PIP[@]}" "$WHEEL[${HCAM_OPS_EXTRAS:-all,test}]"

# Both copied whatever runs: python_tests imports benchmarks/methods' scripts.
cp -r python_tests benchmarks "$tmp/"
cp pyproject.toml "$tmp/"  # pytest's markers and options, nothing importable
cd "$tmp"
# The package must come from the venv, not from a source tree.
env -u PYTHONPATH PYTHONNOUSERSITE=1 "$VPY" - <<'EOF'
import os, sys, torch, hcam_ops
where = os.path.realpath(hcam_ops.__file__)
if not where.startswith(os.path.realpath(sys.prefix) + os.sep):
    sys.exit(f"test_wheel.sh: hcam_ops was imported from {where}, not from the virtualenv {sys.prefix}")
print(f"test_wheel.sh: hcam_ops from {where}; torch {torch.__version__}; CUDA kernels {hcam_ops.cuda_built()}; "
      f"emulated {hcam_ops.cuda_emulated()}; CPU level {hcam_ops.cpu_capability()}; GPU {torch.cuda.is_available()}")
EOF
# One pytest per directory: each has its own conftest, imported as `conftest`.
rc=0
for dir in ${HCAM_OPS_TEST_DIRS:-python_tests benchmarks}; do
  echo "test_wheel.sh: pytest $dir $*"
  env -u PYTHONPATH PYTHONNOUSERSITE=1 "$VPY" -m pytest -p no:cacheprovider "$dir" "$@" || rc=1
done
exit $rc
