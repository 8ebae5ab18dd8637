"""Explainer benchmarks: box quality on human-boxed dev photos, speed against `lime_image`, Spark throughput.

Human boxes are used here only to MEASURE. Commands (run from the repo root, `nice -n 10` on shared machines):

  .venv/bin/python bench/bench_explainer.py quality --model MODEL_DIR [--limit N]
      [--methods foreground,cam,lime,lime+cam]
      [--fit ../shared/data/lion/pool | --foreground FITTED.json]   (foreground: fitted on the unlabelled pool)
  .venv/bin/python bench/bench_explainer.py score --boxes boxes.json          (a `labelfree explain` output)
  .venv/bin/python bench/bench_explainer.py samples --model MODEL_DIR --limit 40 --samples 64,128,256,512,1000
  .venv/bin/python bench/bench_explainer.py lime-package --model MODEL_DIR --limit 5
  .venv/bin/python bench/bench_explainer.py spark --model MODEL_DIR --limit 16

Each prints a markdown table row per configuration (CorLoc, mean top-box IoU, AP@0.5, seconds per image).
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from labelfree.core.images import load_rgb
from labelfree.explainer.batch import ModelLabeller, fit_foreground, image_rng, label_paths
from labelfree.explainer.boxes import mask_boxes, scale_boxes, select_segments
from labelfree.explainer.labeller import LabelConfig
from labelfree.explainer.metrics import load_coco_truths, summarise

DEV = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "lion" / "dev"
POOL = DEV.parent / "pool"


def _dev(limit: int | None, dev: Path):
    if not (dev / "boxes.json").is_file():
        sys.exit(f"no dev set at {dev}")
    truths, sizes = load_coco_truths(dev / "boxes.json")
    keys = sorted(truths)[:limit] if limit else sorted(truths)
    return {k: truths[k] for k in keys}, sizes, [(k, str(dev / "images" / k)) for k in keys]


def _row(name: str, preds, truths, seconds: float | None, extra: str = "") -> None:
    s = summarise(preds, truths)
    per = f"{seconds:.3f}" if seconds is not None else "-"
    print(f"| {name} | {len(truths)} | {s['corloc']:.3f} | {s['miou']:.3f} | {s['ap50']:.3f} | {per} | {extra} |",
          flush=True)


def _header() -> None:
    print("| method | images | CorLoc | mean IoU | AP@0.5 | s/image | notes |")
    print("|---|---|---|---|---|---|---|")


def _baselines(truths, sizes) -> None:
    whole = {k: (np.array([[0, 0, sizes[k][1], sizes[k][0]]], float), np.ones(1)) for k in truths}
    centre = {k: (np.array([[0.15 * sizes[k][1], 0.15 * sizes[k][0], 0.85 * sizes[k][1], 0.85 * sizes[k][0]]]),
                  np.ones(1)) for k in truths}
    _row("whole image", whole, truths, None)
    _row("centred 70% box", centre, truths, None)


def _labeller(args, config: LabelConfig) -> ModelLabeller:
    """The classifier on --device (auto: a GPU when one is usable, as the product does)."""
    labeller = ModelLabeller(args.model, config, threads=args.threads, device=args.device)
    if not getattr(args, "said_device", False):
        print(f"classifier: {type(labeller.model).__name__} on {labeller.model.device}", flush=True)
        args.said_device = True
    return labeller


def _run(labeller: ModelLabeller, items, seed: int = 0):
    start = time.perf_counter()
    records = list(label_paths(labeller, items, seed=seed))
    per = (time.perf_counter() - start) / max(len(items), 1)
    preds = {r["key"]: (np.array(r["boxes"], float).reshape(-1, 4), np.array(r["scores"], float)) for r in records}
    return preds, per


def quality(args) -> None:
    truths, sizes, items = _dev(args.limit, args.dev)
    _header()
    _baselines(truths, sizes)
    base = LabelConfig(n_samples=args.n_samples)
    variants = {
        "foreground": replace(base, method="foreground"),
        "foreground no split": replace(base, method="foreground", split_h=None),
        "foreground coarse only": replace(base, method="foreground", fg_fine=False),
        "cam": replace(base, method="cam"),
        "cam 448 only": replace(base, method="cam", cam_sizes=(448,)),
        "cam no split": replace(base, method="cam", split_h=None),
        "cam 224 only": replace(base, method="cam", cam_sizes=(224,)),
        "lime": replace(base, method="lime"),
        "lime no split": replace(base, method="lime", split_h=None),
        "lime+cam": replace(base, method="lime+cam"),
    }
    for name in args.methods.split(","):
        if name not in variants:
            sys.exit(f"unknown method {name!r}; one of {sorted(variants)}")
        labeller = _labeller(args, variants[name])
        note = f"n_samples={args.n_samples}" if "lime" in name else ""
        if labeller.needs_fit:
            note = _attach_foreground(labeller, args)
        preds, per = _run(labeller, items)
        _row(name, preds, truths, per, note)


def _attach_foreground(labeller: ModelLabeller, args) -> str:
    """Fit on the unlabelled --fit folder (never on dev boxes), or load --foreground; returns a note."""
    import json

    from labelfree.core.images import iter_image_files
    from labelfree.explainer.foreground import ForegroundModel

    if args.foreground is not None:
        labeller.foreground = ForegroundModel.from_dict(json.loads(args.foreground.read_text()))
        return f"fitted model {args.foreground.name}"
    start = time.perf_counter()
    fitted = fit_foreground(labeller, [str(p) for p in iter_image_files([args.fit])])
    return (f"fitted on {fitted.n_images} images of {args.fit.name} in {time.perf_counter() - start:.0f}s, "
            f"fg share {fitted.fg_share:.2f}, {fitted.rounds} self-training rounds")


def score(args) -> None:
    """CorLoc / mean IoU / AP@0.5 of a boxes.json written by `labelfree explain` on the dev images."""
    import json

    from labelfree.explainer.coco import coco_predictions

    truths, sizes, _ = _dev(args.limit, args.dev)
    preds = coco_predictions(json.loads(args.boxes.read_text()))
    _header()
    _baselines(truths, sizes)
    _row(args.boxes.name, preds, {k: truths[k] for k in truths}, None)


def samples(args) -> None:
    """Quality and cost against n_samples (LIME and LIME+CAM), on the first --limit dev images."""
    truths, sizes, items = _dev(args.limit, args.dev)
    _header()
    _baselines(truths, sizes)
    for n in [int(v) for v in args.samples.split(",")]:
        for method in args.methods.split(","):
            labeller = _labeller(args, LabelConfig(method=method, n_samples=n, batch_size=args.batch_size))
            preds, per = _run(labeller, items)
            _row(f"{method} n={n}", preds, truths, per, f"{n / per:.0f} samples/s on {labeller.model.device}")


def lime_package(args) -> None:
    """The `lime` package's lime_image with its defaults (quickshift, 1000 samples) as the speed anchor.

    Boxes from its explanation the same way as ours (superpixels holding 80% of the positive weight),
    predicting on the image stretched to the model side, exactly like our LIME path.
    """
    from lime import lime_image

    truths, sizes, items = _dev(args.limit, args.dev)
    labeller = _labeller(args, LabelConfig(method="lime", n_samples=args.n_samples))
    side = labeller.model.input_size

    def classifier_fn(batch: np.ndarray) -> np.ndarray:
        p = labeller.model.score(np.clip(batch, 0, 255).astype(np.uint8))
        return np.stack([1 - p, p], axis=1)

    _header()
    _baselines(truths, sizes)
    explainer = lime_image.LimeImageExplainer(random_state=0)
    preds, start = {}, time.perf_counter()
    from labelfree.explainer.model import resize

    for key, path in items:
        image = load_rgb(path)
        small = resize(image, side)
        exp = explainer.explain_instance(small, classifier_fn, top_labels=2, random_seed=0)
        weights = np.zeros(int(exp.segments.max()) + 1)
        for seg, w in exp.local_exp[1]:
            weights[seg] = w
        selected = select_segments(weights, 0.8)
        boxes, share = mask_boxes(selected[exp.segments], weights[exp.segments], split_h=None)
        preds[key] = (scale_boxes(boxes, small.shape[:2], image.shape[:2]), share)
    per = (time.perf_counter() - start) / len(items)
    _row("lime_image defaults (quickshift, 1000 samples)", preds, truths, per)
    for method in ("foreground", "cam", "lime"):
        ours = _labeller(args, LabelConfig(method=method, n_samples=args.n_samples, batch_size=args.batch_size))
        note = _attach_foreground(ours, args) + "; " if ours.needs_fit else ""
        preds, per_ours = _run(ours, items)
        _row(f"ours: {method}", preds, truths, per_ours, f"{note}{per / per_ours:.0f}x faster than lime_image")


def spark(args) -> None:
    """Throughput of the Spark job (local[2]) against the in-process loop, same images and config."""
    from labelfree.explainer.spark_job import explain_with_spark

    truths, sizes, items = _dev(args.limit, args.dev)
    config = LabelConfig(method=args.methods.split(",")[0], n_samples=args.n_samples)
    start = time.perf_counter()
    labeller = ModelLabeller(args.model, config, threads=2)
    if labeller.needs_fit:  # both paths fit on the images they label, as the CLI and the task do
        fit_foreground(labeller, [p for _, p in items])
    local = list(label_paths(labeller, items))
    t_local = time.perf_counter() - start
    from labelfree.core.spark import spark_session

    session = spark_session(args.master, "labelfree-bench")
    explain_with_spark(items[:2], args.model, master=args.master, config=config, spark=session)  # JVM warm-up
    start = time.perf_counter()
    remote = explain_with_spark(items, args.model, master=args.master, config=config, spark=session,
                                threads_per_task=1)
    t_spark = time.perf_counter() - start
    same = sorted(local, key=lambda r: r["key"]) == remote
    print(f"| path | images | images/s | same boxes |\n|---|---|---|---|")
    print(f"| in-process (ORT 2 threads) | {len(items)} | {len(items) / t_local:.2f} | - |")
    print(f"| Spark {args.master} (2 tasks x 1 ORT thread) | {len(items)} | {len(items) / t_spark:.2f} | {same} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=["quality", "samples", "lime-package", "spark", "score"])
    parser.add_argument("--model", type=Path)
    parser.add_argument("--boxes", type=Path, help="score: a boxes.json of the dev images")
    parser.add_argument("--fit", type=Path, default=POOL.resolve(), help="foreground: unlabelled positives to fit on")
    parser.add_argument("--foreground", type=Path, help="foreground: a fitted model JSON (--save-foreground)")
    parser.add_argument("--dev", type=Path, default=DEV.resolve())
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--methods", default="foreground,cam,lime,lime+cam")
    parser.add_argument("--n-samples", type=int, default=LabelConfig().n_samples)
    parser.add_argument("--samples", default="64,128,256,512,1000")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--master", default="local[2]")
    parser.add_argument("--device", default="auto", help="where the classifier runs: auto, cpu or cuda")
    parser.add_argument("--batch-size", type=int, default=LabelConfig().batch_size, help="LIME scoring batch")
    args = parser.parse_args()
    if args.command != "score" and args.model is None:
        parser.error("--model is required")
    commands = {"score": score, "quality": quality, "samples": samples, "lime-package": lime_package, "spark": spark}
    commands[args.command](args)


if __name__ == "__main__":
    main()
