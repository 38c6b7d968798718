#!/usr/bin/env bash
# All set-up on a fresh machine: Python dependencies, then the extension built
# in place (editable install). Idempotent: what is there is not fetched again.
#   HCAM_OPS_CUDA=auto|0|1   build the CUDA kernels (auto: when torch and a toolkit allow)
#   HCAM_OPS_TORCH           the torch to install when none is importable (default torch==2.14.1)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}

if ! "$PY" -c "import torch" 2>/dev/null; then
  "$PY" -m pip install -q "${HCAM_OPS_TORCH:-torch==2.14.1}"
fi
"$PY" - <<'PYEOF' || "$PY" -m pip install -q numpy ninja pybind11 pytest pytest-benchmark timm matplotlib tqdm \
  scikit-image opencv-contrib-python-headless
import importlib.util, sys
need = ["numpy", "ninja", "pybind11", "pytest", "pytest_benchmark", "timm", "matplotlib", "tqdm", "skimage", "cv2"]
sys.exit(any(importlib.util.find_spec(m) is None for m in need))
PYEOF
# grad-cam without its dependencies: it would add opencv-python beside the
# contrib build (both own cv2); its other needs are named here.
"$PY" - <<'PYEOF' || { "$PY" -m pip install -q --no-deps grad-cam ttach && "$PY" -m pip install -q scikit-learn torchmetrics; }
import importlib.util, sys
need = ["pytorch_grad_cam", "ttach", "sklearn", "torchmetrics"]
sys.exit(any(importlib.util.find_spec(m) is None for m in need))
PYEOF

export MAX_JOBS=${MAX_JOBS:-$(nproc)}
"$PY" -m pip install -q --no-build-isolation --no-deps -e .
"$PY" -c "import hcam_ops, torch; print('hcam_ops built; torch', torch.__version__, '| CUDA kernels:', hcam_ops.cuda_built(), '| GPU:', torch.cuda.is_available())"
