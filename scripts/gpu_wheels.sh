#!/usr/bin/env bash
# Downloads, here, the wheels of the packages the GPU machine lacks (it has
# torch but no network) into .whl/, which the device tool carries; then
# scripts/gpu_check.sh installs from them. Python 3.12, manylinux x86-64.
#   bash scripts/gpu_wheels.sh [extra packages...]
set -euo pipefail
cd "$(dirname "$0")/.."
grep -qx "/.whl/" .git/info/exclude 2>/dev/null || echo "/.whl/" >> .git/info/exclude
PLATFORMS=()
for p in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64 manylinux1_x86_64 any; do
  PLATFORMS+=(--platform "$p")
done
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp "${PLATFORMS[@]}" \
  -d .whl grad-cam ttach opencv-contrib-python-headless opencv-python-headless tensorboard tensorboard-data-server \
  absl-py grpcio markdown protobuf werkzeug markupsafe \
  ruff "$@"
ls -la .whl
