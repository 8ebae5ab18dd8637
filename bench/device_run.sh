#!/usr/bin/env bash
# One prepared device run (see bench/results/inference.md): GPU detector images/s at batch 1
# and 32, then the CPU service benchmark pinned to 2 cores of the quiet device machine.
# Needs the service's wheels for Python 3.12 in .whl/ (carried), since the device image lacks them.
set -u
export PYTHONUNBUFFERED=1
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
mkdir -p /tmp/pkg && ln -sfn "$PWD/services" /tmp/pkg/labelfree
export PYTHONPATH="/tmp/pkg:/tmp/site:$PWD"
nvidia-smi -L
python3 -c "import onnxruntime as o, torch; print('ort', o.__version__, o.get_available_providers(), 'torch', torch.__version__)"
[ -n "${SKIP_GPU:-}" ] || python3 bench/gpu_detector.py --size 256 2>&1 | tee "$OUT/gpu.txt"
taskset -c 0,1 python3 bench/bench_inference.py --size 256 --survey-images 200 --survey-batches 1,4 2>&1 \
  | grep -v Warning | tee "$OUT/cpu2.txt"
