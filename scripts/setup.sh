#!/usr/bin/env bash
# All set-up on a fresh machine: torch (when none is importable), the build
# tools, then the package with every extra, built in place against that torch
# (no build isolation: see pyproject.toml). Idempotent.
#   HCAM_OPS_CUDA=auto|0|1|emulate   build the CUDA kernels (auto: when torch and a toolkit
#                            allow; emulate: on the emulator, docs/emulator.md)
#   HCAM_OPS_TORCH           the torch to install when none is importable (default torch==2.14.1)
#   HCAM_OPS_WHEELS=DIR      install from these wheels only (no index), e.g. on a machine without network
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
PIP=("$PY" -m pip install -q)
if [ -n "${HCAM_OPS_WHEELS:-}" ]; then
  PIP+=(--no-index --find-links "$HCAM_OPS_WHEELS")
fi

if ! "$PY" -c "import torch" 2>/dev/null; then
  "${PIP[@]}" "${HCAM_OPS_TORCH:-torch==2.14.1}"
fi
"$PY" -c "import setuptools, wheel, ninja" 2>/dev/null || "${PIP[@]}" setuptools wheel ninja
export MAX_JOBS=${MAX_JOBS:-$(nproc)}
"${PIP[@]}" --no-build-isolation -e ".[all,test]"
# grad-cam needs opencv-python-headless and SEEDS the contrib build; both own
# the cv2 package, and whichever pip unpacks last wins (the order is not
# fixed). Where the plain build won, the contrib build's files go back over it.
# The plain build has an empty cv2.ximgproc (typing stubs): ask for SEEDS.
if ! "$PY" -c "import cv2, sys; sys.exit(not hasattr(cv2.ximgproc, 'createSuperpixelSEEDS'))" 2>/dev/null; then
  contrib=$("$PY" -c "import importlib.metadata as m; print(m.version('opencv-contrib-python-headless'))")
  "${PIP[@]}" --force-reinstall --no-deps "opencv-contrib-python-headless==$contrib"
fi
"$PY" -c "import hcam_ops, torch; print('hcam_ops built; torch', torch.__version__, '| CUDA kernels:', hcam_ops.cuda_built(), '| emulated:', hcam_ops.cuda_emulated(), '| GPU:', torch.cuda.is_available())"
