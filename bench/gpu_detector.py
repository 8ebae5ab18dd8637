"""Detector images/s on a GPU at batch 1 and 32 (device runs only; prints one line per case).

Runs the team's detector graph (backbone + neck + head + in-graph top-K decode, the very
module that is exported to ONNX) in PyTorch on CUDA, fp32 and fp16 autocast, untrained
weights (speed does not depend on them). The device image has CPU-only ONNX Runtime, so
the ONNX file itself is timed there on CPU for reference.

    python3 bench/gpu_detector.py --size 256
"""

from __future__ import annotations

import argparse
import time

import torch


def images_per_second(fn, batch: torch.Tensor, seconds: float = 3.0) -> float:
    for _ in range(5):
        fn(batch)
    torch.cuda.synchronize()
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        fn(batch)
        n += 1
    torch.cuda.synchronize()
    return n * batch.shape[0] / (time.perf_counter() - start)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=256)
    args = ap.parse_args()
    from labelfree.core.backbone import load_backbone
    from labelfree.trainer.detector.model import Detector, ExportModel

    torch.manual_seed(0)
    dev = torch.device("cuda")
    graph = ExportModel(Detector(load_backbone(pretrained=False), num_classes=1), 100, 3).eval().to(dev)
    print(f"device {torch.cuda.get_device_name(0)}, torch {torch.__version__}, S={args.size}", flush=True)
    for bs in (1, 32):
        x = torch.randint(0, 256, (bs, args.size, args.size, 3), dtype=torch.uint8, device=dev)
        with torch.inference_mode():
            fp32 = images_per_second(graph, x)
            with torch.autocast("cuda", dtype=torch.float16):
                fp16 = images_per_second(graph, x)
        print(f"GPU batch {bs}: fp32 {fp32:.0f} images/s, fp16 autocast {fp16:.0f} images/s", flush=True)


if __name__ == "__main__":
    main()
