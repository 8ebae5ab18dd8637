"""Detector quality, cost and CPU throughput per variant, in one run on one machine.

1. Train on the teacher's pseudo-boxes of ``lion/pool`` only, one DET_DIR per ``--input-size``
   (``--out/s<S>``; skipped with --skip-train when it exists). Each DET_DIR holds the fp32
   graph (``model_fp32.onnx``) and the int8 one (``model.onnx``, calibrated on training images).
2. Every variant (size x precision) runs ``detect`` on ``lion/dev/images``: AP@0.5, CorLoc,
   mean top-box IoU against the HUMAN boxes, beside the teacher's boxes on the same images and
   the whole-image baseline (``labelfree.explainer.metrics``, the explainer's own code).
3. Cost per image, detector (ORT, batch 1, stretch included, from the decoded RGB array) against
   our LIME explainer (``method="lime"``, its default ``n_samples``) and the labeller that made
   the training boxes (``--teacher-method``), all on the same dev images, same process, same
   ORT thread count. The shared box is loaded by other work, so the ratio is given on CPU
   seconds (``time.process_time``: compute spent, all threads) and on wall seconds; LIME and
   the detectors are timed in alternating rounds so load drift hits both.
4. Throughput: ORT images/s at batch 1 and 16 (model only) per variant.

    .venv/bin/python bench/bench_detector.py --boxes /tmp/lf_cache/boxes/lion_pool.json \\
        --teacher /tmp/lf_cache/boxes/lion_dev.json --classifier /tmp/lf_cache/models/lion \\
        --teacher-method foreground --out /tmp/lf_cache/det/v2 --input-size 160 128 96 --epochs 4 \\
        --train-threads 1 --threads 1 --neg ../shared/data/negatives/imagenet --neg ../shared/data/negatives/coco

(the runs and their exact commands are in bench/results/detector.md)
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from PIL import Image

from labelfree.trainer.detector import EPOCHS, PASTE, PASTE_COVER

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
GRAPHS = {"fp32": "model_fp32.onnx", "int8": "model.onnx"}


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


def recall_any(preds: dict, truths: dict) -> float:
    """Share of human boxes that SOME kept detection covers at IoU >= 0.5: the AP ceiling."""
    from labelfree.trainer.detector.boxops import box_iou

    hit = total = 0
    for key, truth in truths.items():
        boxes = preds.get(key, (np.zeros((0, 4)), None))[0]
        total += len(truth)
        if len(truth) and len(boxes):
            hit += int((box_iou(np.asarray(truth), boxes).max(axis=1) >= 0.5).sum())
    return hit / max(total, 1)


def confidences(preds: dict) -> dict:
    """What a survey that thresholds detections sees: the median top confidence, the share of
    photos with no box at conf >= 0.5, and the share with two or more boxes at conf >= 0.1. AP only
    ranks, so it misses a detector that is right but unsure; on photos of one animal these show it."""
    scores = [np.asarray(s) for _, s in preds.values()]
    top = [float(s.max()) if len(s) else 0.0 for s in scores]
    n = max(len(scores), 1)
    return {"median_top_conf": float(np.median(top)) if top else 0.0,
            "no_box_at_0.5": sum(t < 0.5 for t in top) / n,
            "two_plus_at_0.1": sum(int((s >= 0.1).sum()) >= 2 for s in scores) / n}


def by_animal_count(preds: dict, truths: dict, summarise) -> dict:
    """The metrics on dev images with one human box and on those with several, apart; on the
    one-box photos also the ``confidences`` a thresholding survey would see."""
    out = {}
    for name, keep in (("one_box", lambda t: len(t) == 1), ("several_boxes", lambda t: len(t) > 1)):
        sub = {k: t for k, t in truths.items() if keep(t)}
        part = {k: preds.get(k, (np.zeros((0, 4)), np.zeros(0))) for k in sub}
        extra = confidences(part) if name == "one_box" else {}
        out[name] = rounded({"n_images": len(sub), "n_boxes": int(sum(len(t) for t in sub.values())),
                             **summarise(part, sub), "recall_any": recall_any(part, sub), **extra})
    return out


def timed(fn, items: list) -> tuple[float, float]:
    """(wall, CPU) seconds per item of ``fn`` over ``items``."""
    wall, cpu = time.perf_counter(), time.process_time()
    for item in items:
        fn(item)
    return (time.perf_counter() - wall) / len(items), (time.process_time() - cpu) / len(items)


def rounded(d: dict) -> dict:
    return {k: round(v, 4) if isinstance(v, float) else v for k, v in d.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pool", type=Path, default=DATA / "lion" / "pool")
    ap.add_argument("--boxes", type=Path, required=True, help="teacher boxes of --pool (COCO)")
    ap.add_argument("--dev", type=Path, default=DATA / "lion" / "dev")
    ap.add_argument("--teacher", type=Path, help="teacher boxes of the dev images (COCO), for comparison")
    ap.add_argument("--classifier", type=Path, help="classifier MODEL_DIR, to time LIME and the teacher")
    ap.add_argument("--teacher-method", default="foreground", help="the labeller that made --boxes (timed)")
    ap.add_argument("--fit-images", type=int, default=48,
                    help="pool images a per-dataset teacher (foreground) is fitted on, timed")
    ap.add_argument("--cost-images", type=int, default=6, help="dev images LIME and the teacher are timed on")
    ap.add_argument("--cost-rounds", type=int, default=3)
    ap.add_argument("--out", type=Path, required=True, help="parent of the DET_DIRs (s<S> each)")
    ap.add_argument("--neg", type=Path, action="append", default=[])
    ap.add_argument("--epochs", type=int, default=EPOCHS)
    ap.add_argument("--input-size", type=int, nargs="+", default=[128])
    ap.add_argument("--train-threads", type=int, default=None)
    ap.add_argument("--self-train-rounds", type=int, default=1)
    ap.add_argument("--relabel-relative", type=float, default=0.5, help="self-training: keep peaks >= this x top")
    ap.add_argument("--min-relative", type=float, default=0.5,
                    help="train on teacher boxes scoring >= this x the image's top box (0: candidates too)")
    ap.add_argument("--soft", action="store_true",
                    help="keep boxes under --min-relative as soft targets (centre heat = relative score)")
    ap.add_argument("--mosaic", type=float, default=0.0, help="share of 2x2 mosaic training views")
    ap.add_argument("--paste", type=float, default=PASTE, help="share of training views with a pasted animal")
    ap.add_argument("--paste-cover", type=float, default=PASTE_COVER,
                    help="the most of an animal in the view a pasted one may cover (share of its box)")
    ap.add_argument("--threshold", type=float, default=0.0,
                    help="detections kept for AP (0: the graph's whole top-K; 0.01 before calibrated scores)")
    ap.add_argument("--no-calibrate", action="store_true", help="export uncalibrated scores")
    ap.add_argument("--threads", type=int, default=2, help="ORT threads for detection and all timing")
    ap.add_argument("--skip-train", action="store_true", help="reuse DET_DIRs that already exist")
    ap.add_argument("--json", type=Path, help="also write the report here")
    args = ap.parse_args()

    from labelfree.core.images import iter_image_files, load_rgb
    from labelfree.explainer.coco import coco_predictions
    from labelfree.explainer.metrics import load_coco_truths, summarise
    from labelfree.trainer.detector.build import build_detector
    from labelfree.trainer.detector.infer import DetectorRunner, detect_folder
    from labelfree.trainer.detector.train import TrainConfig

    report: dict = {"out": str(args.out), "boxes": str(args.boxes), "threads": args.threads, "train": {}}
    det_dirs = {}
    for size in args.input_size:
        det_dir = args.out / f"s{size}"
        det_dirs[size] = det_dir
        if args.skip_train and (det_dir / "manifest.json").is_file():
            continue
        config = TrainConfig(input_size=size, epochs=args.epochs, threads=args.train_threads, mosaic=args.mosaic,
                             paste=args.paste, paste_cover=args.paste_cover)
        start = time.perf_counter()
        manifest = build_detector(args.pool, args.boxes, det_dir, negatives=args.neg, config=config,
                                  show_progress=True, self_train_rounds=args.self_train_rounds,
                                  relabel_relative=args.relabel_relative, min_relative_score=args.min_relative,
                                  soft_candidates=args.soft, calibrate=not args.no_calibrate)
        report["train"][size] = {"seconds": round(time.perf_counter() - start, 1),
                                 "n_positive": manifest["training"]["n_positive"],
                                 "n_negative": manifest["training"]["n_negative"], "epochs": args.epochs,
                                 "self_train_rounds": args.self_train_rounds, "mosaic": args.mosaic, "paste": args.paste,
                                 "paste_cover": args.paste_cover,
                                 "relabel_relative": args.relabel_relative, "soft": args.soft,
                                 "val_vs_teacher": manifest["metrics"],
                                 "score_calibration": manifest["training"]["score_calibration"],
                                 "int8_vs_fp32": manifest.get("int8_vs_fp32")}

    dev_images = args.dev / "images"
    truths, sizes = load_coco_truths(args.dev / "boxes.json")
    dev = {"n_images": len(truths), "n_human_boxes": int(sum(len(t) for t in truths.values())),
           "whole_image": rounded(summarise({k: (np.array([[0, 0, w, h]], float), np.ones(1))
                                             for k, (h, w) in sizes.items()}, truths))}
    if args.teacher and args.teacher.is_file():
        teacher = coco_predictions(json.loads(args.teacher.read_text()))
        dev["teacher"] = rounded({**summarise(teacher, truths), "recall_any": recall_any(teacher, truths)})
        dev["teacher by animal count"] = by_animal_count(teacher, truths, summarise)
    runners, throughput = {}, {}
    paths = list(iter_image_files([dev_images]))
    raw = [load_rgb(p) for p in paths[:64]]
    for size, det_dir in det_dirs.items():
        precisions = {json.loads((det_dir / "manifest.json").read_text()).get("precision", "fp32"), "fp32"}
        for precision, graph in GRAPHS.items():
            if precision not in precisions:
                continue
            name = f"s{size} {precision}"
            doc = detect_folder(det_dir, dev_images, threshold=args.threshold, threads=args.threads, batch_size=16,
                                graph=graph)
            preds = md_predictions(doc, sizes)
            dev[name] = rounded({**summarise(preds, truths), "recall_any": recall_any(preds, truths)})
            dev[f"{name} by animal count"] = by_animal_count(preds, truths, summarise)
            kept = {k: (b[s >= 0.1], s[s >= 0.1]) for k, (b, s) in preds.items()}
            dev[f"{name} conf>=0.1"] = rounded(summarise(kept, truths))
            runner = runners[name] = DetectorRunner(det_dir, threads=args.threads, graph=graph)
            ready = np.stack([runner.prepare(im) for im in raw])
            result = {}
            for bs in (1, 16):
                batches = [ready[i:i + bs] for i in range(0, len(ready) - bs + 1, bs)]
                runner.predict(batches[0])
                wall, _ = timed(runner.predict, batches)
                result[f"model_batch{bs}_images_per_s"] = round(bs / wall, 1)
            throughput[name] = result
    report["dev"] = dev
    report["throughput"] = throughput

    cost: dict = {"images": args.cost_images, "rounds": args.cost_rounds, "detector": {}}
    items = [(p, im) for p, im in zip(paths, raw)][: args.cost_images]
    det_times = {name: [] for name in runners}
    # ablation: the same graphs behind the plain bilinear resize used before ``detector_resize``
    plain = {f"{name}, plain bilinear resize": runner for name, runner in runners.items()}
    det_times.update({name: [] for name in plain})
    lime_times, teacher_times = [], []
    labellers = {}
    if args.classifier:
        from labelfree.explainer.batch import ModelLabeller, image_rng
        from labelfree.explainer.labeller import LabelConfig

        lime_config = LabelConfig(method="lime")
        cost["lime"] = {"method": "lime", "n_samples": lime_config.n_samples}
        cost["teacher"] = {"method": args.teacher_method}
        labellers = {"lime": ModelLabeller(args.classifier, lime_config, threads=args.threads),
                     "teacher": ModelLabeller(args.classifier, LabelConfig(method=args.teacher_method),
                                              threads=args.threads)}
        if labellers["teacher"].needs_fit:
            # A per-dataset teacher pays a fitting pass over the images before labelling them:
            # its cost per image is that pass's share plus the labelling.
            from labelfree.explainer.batch import fit_foreground

            fit_paths = list(iter_image_files([args.pool]))[: args.fit_images]
            wall, cpu = time.perf_counter(), time.process_time()
            fit_foreground(labellers["teacher"], fit_paths)
            cost["teacher"]["fit_pass_wall_s"] = round((time.perf_counter() - wall) / len(fit_paths), 4)
            cost["teacher"]["fit_pass_cpu_s"] = round((time.process_time() - cpu) / len(fit_paths), 4)
            cost["teacher"]["fit_images"] = len(fit_paths)
        for labeller in labellers.values():  # warm-up
            labeller.label(raw[0], image_rng(0, paths[0].name))
    for name, runner in runners.items():  # warm-up
        runner.predict(runner.prepare(raw[0])[None])
    per_round = max(1, len(items) // args.cost_rounds)
    for r in range(args.cost_rounds):
        chunk = items[r * per_round:(r + 1) * per_round] or items[:1]
        if labellers:
            lime_times.append(timed(lambda it: labellers["lime"].label(it[1], image_rng(0, it[0].name)), chunk))
            teacher_times.append(timed(lambda it: labellers["teacher"].label(it[1], image_rng(0, it[0].name)), chunk))
        for name, runner in runners.items():
            det_times[name].append(timed(lambda im, runner=runner: runner.predict(runner.prepare(im)[None]),
                                         raw[:32]))
        for name, runner in plain.items():
            det_times[name].append(timed(lambda im, runner=runner: runner.predict(np.array(Image.fromarray(im).resize(
                (runner.input_size, runner.input_size), Image.Resampling.BILINEAR))[None]), raw[:32]))
    mean = lambda xs, i: float(np.mean([x[i] for x in xs]))  # noqa: E731
    if lime_times:
        cost["lime"].update({"wall_s": round(mean(lime_times, 0), 3), "cpu_s": round(mean(lime_times, 1), 3)})
        cost["teacher"].update({"label_wall_s": round(mean(teacher_times, 0), 4),
                                "label_cpu_s": round(mean(teacher_times, 1), 4)})
        cost["teacher"]["wall_s"] = round(cost["teacher"]["label_wall_s"] + cost["teacher"].get("fit_pass_wall_s", 0), 4)
        cost["teacher"]["cpu_s"] = round(cost["teacher"]["label_cpu_s"] + cost["teacher"].get("fit_pass_cpu_s", 0), 4)
    for name, times in det_times.items():
        entry = {"wall_ms": round(1000 * mean(times, 0), 2), "cpu_ms": round(1000 * mean(times, 1), 2)}
        if lime_times:
            for ref in ("lime", "teacher"):
                entry[f"{ref}_over_detector_cpu"] = round(cost[ref]["cpu_s"] / mean(times, 1), 1)
                entry[f"{ref}_over_detector_wall"] = round(cost[ref]["wall_s"] / mean(times, 0), 1)
        cost["detector"][name] = entry
    report["cost"] = cost
    text = json.dumps(report, indent=1)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")


if __name__ == "__main__":
    main()
