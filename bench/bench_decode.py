"""Camera-trap-size JPEGs: decode + stretch cost and detections, full decode against the
reduced-scale decode the detector paths use (``core.images.detector_preview_side``).

Camera traps write 8-20 MP JPEGs; the detector reads 128 x 128. Each lion/dev photo is blown up
to --width x --height (4000 x 3000 = 12 MP), with sensor-like noise so the JPEG is not
unnaturally smooth, and saved at quality 90. For each: time decode + stretch both ways (one
thread), run the deployed detector on both inputs, and compare the top detection.

    .venv/bin/python bench/bench_decode.py --model DET_DIR --images ../shared/data/lion/dev/images --limit 40
"""

from __future__ import annotations

import argparse
import io
import time
from pathlib import Path

import numpy as np
from PIL import Image

from labelfree.core.images import decode_image, detector_preview_side, iter_image_files
from labelfree.explainer.boxes import box_iou
from labelfree.trainer.detector.infer import DetectorRunner
from labelfree.inference.preprocess import stretch


def camera_trap_jpeg(path: Path, width: int, height: int, rng: np.random.Generator) -> bytes:
    big = np.asarray(Image.open(path).convert("RGB").resize((width, height), Image.BICUBIC), dtype=np.int16)
    noisy = np.clip(big + rng.normal(0, 4, big.shape), 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(noisy).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, required=True, help="DET_DIR")
    ap.add_argument("--images", type=Path, required=True)
    ap.add_argument("--limit", type=int, default=40)
    ap.add_argument("--width", type=int, default=4000)
    ap.add_argument("--height", type=int, default=3000)
    args = ap.parse_args()

    runner = DetectorRunner(args.model, threads=1)
    size = runner.input_size
    rng = np.random.default_rng(0)
    paths = list(iter_image_files([args.images]))[: args.limit]
    blobs = [camera_trap_jpeg(p, args.width, args.height, rng) for p in paths]
    times = {"full": [], "reduced": []}
    ious, conf_diffs, same_count = [], [], 0
    for data in blobs:
        inputs = {}
        for name, preview in (("full", None), ("reduced", detector_preview_side(size))):
            start = time.perf_counter()
            inputs[name] = stretch(decode_image(data, preview_side=preview), size)
            times[name].append(time.perf_counter() - start)
        (fb, fs, _), (rb, rs, _) = (runner.predict(inputs[n][None]) for n in ("full", "reduced"))
        ious.append(float(box_iou(fb[0][:1], rb[0][:1])[0, 0]))
        conf_diffs.append(abs(float(fs[0][0]) - float(rs[0][0])))
        same_count += int((fs[0] >= 0.1).sum() == (rs[0] >= 0.1).sum())
    full, reduced = (float(np.median(times[k])) for k in ("full", "reduced"))
    mb = np.mean([len(b) for b in blobs]) / 1e6
    print(f"| {len(blobs)} JPEGs {args.width}x{args.height} ({mb:.1f} MB), detector S={size} | full decode | "
          f"reduced decode |\n|---|---|---|")
    print(f"| decode + stretch, median per photo, 1 thread | {full * 1000:.1f} ms | {reduced * 1000:.1f} ms "
          f"({full / reduced:.1f}x less) |")
    print(f"| photos/s per core, decode + stretch only | {1 / full:.1f} | {1 / reduced:.1f} |")
    print(f"| top detection: IoU full vs reduced, median / min | {np.median(ious):.3f} / {min(ious):.3f} | |")
    print(f"| top confidence, max abs difference | {max(conf_diffs):.3f} | |")
    print(f"| photos with the same number of detections >= 0.1 | {same_count} / {len(blobs)} | |")


if __name__ == "__main__":
    main()
