#!/usr/bin/env bash
# Create .venv-triton: its own Python 3.11 venv holding nvidia-pytriton (a real Triton server
# whose Python backend runs ONNX Runtime). It stays apart from .venv because pytriton pins
# its own numpy/protobuf/tritonclient versions.
#
# Usage: bash services/inference/setup_triton.sh [VENV_DIR]   (default: <repo>/.venv-triton)
# Idempotent: a venv that already imports pytriton is left as is.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
VENV="${1:-$ROOT/.venv-triton}"
PY="${PYTHON311:-python3.11}"
if [ -x "$VENV/bin/python" ] && "$VENV/bin/python" -c 'import pytriton, onnxruntime' 2>/dev/null; then
  echo "$VENV ready"
  exit 0
fi
"$PY" -m venv "$VENV"
"$VENV/bin/pip" install --quiet --upgrade pip
"$VENV/bin/pip" install --quiet nvidia-pytriton onnxruntime numpy
# pytriton's bundled tritonserver links libpython: it needs this dir on LD_LIBRARY_PATH.
LIBDIR="$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_config_var("LIBDIR"))')"
LD_LIBRARY_PATH="$LIBDIR:${LD_LIBRARY_PATH:-}" "$VENV/bin/python" -c 'import pytriton.triton, onnxruntime'
echo "$VENV ready (LD_LIBRARY_PATH needs $LIBDIR)"
