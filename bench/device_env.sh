# Sourced by the device scripts (device_run.sh, device_sweep.sh): shared set-up.
# On the device (SMOKE unset) it installs the carried wheels (.whl/) and makes `labelfree` importable from
# the bare checkout; locally (SMOKE=1) the project's .venv is used. Sets OUT, D (.devdata) and PY.
set -u
export PYTHONUNBUFFERED=1 TQDM_DISABLE=1
OUT=${OUT:-/tmp/device_out}
mkdir -p "$OUT"
D=.devdata
if [ -z "${SMOKE:-}" ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
  mkdir -p /tmp/pkg && ln -sfn "$PWD/services" /tmp/pkg/labelfree
  export PYTHONPATH="/tmp/pkg:/tmp/site:$PWD"
  PY=python3
  nvidia-smi -L
else
  PY=.venv/bin/python
fi
