"""Detector quality, cost and CPU throughput, in one run on one machine.

1. Train on pseudo-boxes (LIME teacher) of ``lion/pool`` only (skipped with --skip-train).
2. ``detect`` on ``lion/dev/images``; AP@0.5, CorLoc, mean top-box IoU against the HUMAN boxes,
   beside the teacher's boxes on the same images and the whole-image baseline (metrics from
   ``labelfree.explainer.metrics``, the same code the explainer reports with).
3. Cost: seconds per image of the detector (ORT, batch 1, resize included) against the
   teacher labeller (LIME through the classifier) on a few dev images, same process.
4. Throughput: ORT images/s on ``--threads`` threads at batch 1 and 16 (model only, and end
   to end with JPEG decode).

    .venv/bin/python bench/bench_detector.py --boxes /tmp/lf_cache/boxes/lion_pool.json \\
        --teacher /tmp/lf_cache/boxes/lion_dev.json --classifier /tmp/lf_cache/models/lion \\
        --out /tmp/lf_cache/det/lion --epochs 4
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def md_predictions(doc: dict, sizes: dict[str, tuple[int, int]]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """MegaDetector doc -> {file: (boxes (N, 4) xyxy pixels, scores (N,))}."""
    out = {}
    for image in doc["images"]:
        h, w = sizes.get(image["file"], (1, 1))
        dets = image.get("detections") or []
        boxes = np.array([[d["bbox"][0] * w, d["bbox"][1] * h, (d["bbox"][0] + d["bbox"][2]) * w,
                           (d["bbox"][1] + d["bbox"][3]) * h] for d in dets], np.float64).reshape(-1, 4)
        out[image["file"]] = (boxes, np.array([d["conf"] for d in dets], np.float64))
    return out


def per_image_seconds(fn, items: list, repeat: int = 1) -> float:
    start = time.perf_counter()
    for _ in range(repeat):
        for item in items:
            fn(item)
    return (time.perf_counter() - start) / (repeat * len(items))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pool", type=Path, default=DATA / "lion" / "pool")
    ap.add_argument("--boxes", type=Path, required=True, help="teacher boxes of --pool (COCO)")
    ap.add_argument("--dev", type=Path, default=DATA / "lion" / "dev")
    ap.add_argument("--teacher", type=Path, help="teacher boxes of the dev images (COCO), for comparison")
    ap.add_argument("--classifier", type=Path, help="classifier MODEL_DIR, to time the teacher (LIME)")
    ap.add_argument("--teacher-method", default="lime+cam")
    ap.add_argument("--teacher-samples", type=int, default=256)
    ap.add_argument("--teacher-images", type=int, default=3)
    ap.add_argument("--out", type=Path, required=True, help="DET_DIR")
    ap.add_argument("--neg", type=Path, action="append", default=[])
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--input-size", type=int, default=256)
    ap.add_argument("--train-threads", type=int, default=None)
    ap.add_argument("--self-train-rounds", type=int, default=1)
    ap.add_argument("--threads", type=int, default=2, help="ORT threads for detection and timing")
    ap.add_argument("--skip-train", action="store_true")
    ap.add_argument("--json", type=Path, help="also write the report here")
    args = ap.parse_args()

    from labelfree.core.images import iter_image_files, load_rgb
    from labelfree.explainer.coco import coco_predictions
    from labelfree.explainer.metrics import load_coco_truths, summarise
    from labelfree.trainer.detector.build import build_detector
    from labelfree.trainer.detector.infer import DetectorRunner, detect_folder
    from labelfree.trainer.detector.train import TrainConfig

    report: dict = {"det_dir": str(args.out)}
    if not args.skip_train:
        config = TrainConfig(input_size=args.input_size, epochs=args.epochs, threads=args.train_threads)
        start = time.perf_counter()
        manifest = build_detector(args.pool, args.boxes, args.out, negatives=args.neg, config=config,
                                  show_progress=True, self_train_rounds=args.self_train_rounds)
        report["train"] = {"seconds": round(time.perf_counter() - start, 1),
                           "n_positive": manifest["training"]["n_positive"],
                           "n_negative": manifest["training"]["n_negative"], "epochs": args.epochs, "self_train_rounds": args.self_train_rounds,
                           "input_size": args.input_size, "val_vs_teacher": manifest["metrics"]}
    manifest = json.loads((args.out / "manifest.json").read_text())
    report["train_history"] = json.loads((args.out / "metrics.json").read_text()).get("history")

    dev_images = args.dev / "images"
    truths, sizes = load_coco_truths(args.dev / "boxes.json")
    start = time.perf_counter()
    doc = detect_folder(args.out, dev_images, threshold=0.01, threads=args.threads, batch_size=16)
    detect_s = time.perf_counter() - start
    preds = md_predictions(doc, sizes)
    report["dev"] = {"n_images": len(truths), "n_human_boxes": int(sum(len(t) for t in truths.values())),
                     "detector": summarise(preds, truths),
                     "whole_image": summarise({k: (np.array([[0, 0, w, h]], float), np.ones(1))
                                               for k, (h, w) in sizes.items()}, truths)}
    if args.teacher and args.teacher.is_file():
        report["dev"]["teacher"] = summarise(coco_predictions(json.loads(args.teacher.read_text())), truths)
    for threshold in (0.1, 0.3):
        kept = {k: (b[s >= threshold], s[s >= threshold]) for k, (b, s) in preds.items()}
        report["dev"][f"detector_conf>={threshold}"] = summarise(kept, truths)
    report["dev"] = {k: ({m: round(v, 4) for m, v in d.items()} if isinstance(d, dict) else d)
                     for k, d in report["dev"].items()}

    runner = DetectorRunner(args.out, threads=args.threads)
    paths = list(iter_image_files([dev_images]))[:64]
    raw = [load_rgb(p) for p in paths]
    ready = np.stack([runner.prepare(im) for im in raw])
    throughput = {"threads": args.threads, "input_size": runner.input_size,
                  "end_to_end_detect_images_per_s": round(len(truths) / detect_s, 1)}
    for bs in (1, 16):
        batches = [ready[i:i + bs] for i in range(0, len(ready) - bs + 1, bs)]
        runner.predict(batches[0])
        start = time.perf_counter()
        for batch in batches:
            runner.predict(batch)
        throughput[f"model_batch{bs}_images_per_s"] = round(len(batches) * bs / (time.perf_counter() - start), 1)
    report["throughput"] = throughput

    det_s = per_image_seconds(lambda im: runner.predict(runner.prepare(im)[None]), raw[:16])
    cost = {"detector_s_per_image": round(det_s, 5)}
    if args.classifier:
        from labelfree.explainer.batch import ModelLabeller, image_rng
        from labelfree.explainer.labeller import LabelConfig

        labeller = ModelLabeller(args.classifier, LabelConfig(method=args.teacher_method,
                                                              n_samples=args.teacher_samples), threads=args.threads)
        items = list(zip(paths, raw))[: args.teacher_images]
        teacher_s = per_image_seconds(lambda item: labeller.label(item[1], image_rng(0, item[0].name)), items)
        cost.update({"teacher": f"{args.teacher_method}, {args.teacher_samples} samples",
                     "teacher_s_per_image": round(teacher_s, 3), "detector_cheaper_x": round(teacher_s / det_s, 1)})
    report["cost"] = cost
    text = json.dumps(report, indent=1)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")


if __name__ == "__main__":
    main()
