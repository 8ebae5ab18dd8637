"""Classifier quality and speed on ../shared/data (EfficientNet-Lite0 + logistic regression).

    nice -n 10 .venv/bin/python bench/bench_classifier.py --data ../shared/data --work /tmp/lf_cache/bench

Quality (the exported ONNX graph scores the held-out images end to end):
- lion: train on lion/pool vs negatives (imagenet + coco + scenes + non-lion bigcats) minus a
  held-back 20 % of the negatives; score lion/dev/images (300) against the held-back negatives.
- snow leopard: bigcats/snow_leopard vs the other cats + negatives; 20 % of positives and of
  negatives held back and scored.
Speed: featurisation images/s through ONNX Runtime in-process and through Spark local[2]
(no cache), and the head's CV + fit time from metrics.json.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
from sklearn.metrics import average_precision_score, roc_auc_score

from labelfree.core.store import LocalStore
from labelfree.trainer.featurize import featurize_files, get_featurizer
from labelfree.trainer.predict import ClassifierModel, classify_folder
from labelfree.trainer.train import list_images, train_classifier


def hold_back(files: list[Path], fraction: float, rng: np.random.Generator) -> tuple[list[Path], list[Path]]:
    """(kept, held back) with ``fraction`` of ``files`` held back at random."""
    order = rng.permutation(len(files))
    cut = int(round(len(files) * fraction))
    return [files[i] for i in sorted(order[cut:])], [files[i] for i in sorted(order[:cut])]


def score_files(model: ClassifierModel, files: list[Path]) -> np.ndarray:
    from labelfree.core.images import decode_image
    from labelfree.trainer.featurize import image_views

    out = []
    for i in range(0, len(files), 32):
        batch = np.stack([image_views(decode_image(f.read_bytes()), model.input_size)["full"]
                          for f in files[i:i + 32]])
        out.append(model.score(batch))
    return np.concatenate(out)


def quality(name: str, pos_train: list[Path], neg_train: list[Path], pos_test: list[Path] | Path,
            neg_test: list[Path], work: Path, store) -> dict:
    model_dir = work / f"model_{name}"
    metrics = train_classifier(pos_train, neg_train, model_dir, work_dir=work, store=store,
                               sources={"bench": name})
    model = ClassifierModel(model_dir)
    t = time.perf_counter()
    if isinstance(pos_test, Path):
        rows, skipped = classify_folder(model_dir, pos_test)
        pos_scores = np.array([s for _, s in rows])
    else:
        pos_scores = score_files(model, pos_test)
    neg_scores = score_files(model, neg_test)
    score_s = time.perf_counter() - t
    y = np.r_[np.ones(len(pos_scores)), np.zeros(len(neg_scores))]
    s = np.r_[pos_scores, neg_scores]
    thr = metrics["threshold"]
    return {
        "train_pos": len(pos_train), "train_neg": len(neg_train),
        "test_pos": len(pos_scores), "test_neg": len(neg_scores),
        "roc_auc": float(roc_auc_score(y, s)), "pr_auc": float(average_precision_score(y, s)),
        "threshold": thr, "accuracy_at_threshold": float(((s >= thr) == (y == 1)).mean()),
        "recall_at_threshold": float((pos_scores >= thr).mean()),
        "false_positive_rate_at_threshold": float((neg_scores >= thr).mean()),
        "validation_roc_auc": metrics["validation"]["roc_auc"], "validation_ece": metrics["validation"]["calibration"]["ece"],
        "C": metrics["cv"]["C"], "head_s": metrics["timings_s"]["head"],
        "end_to_end_scoring_images_per_s": round(len(s) / score_s, 1),
    }


def speed(files: list[Path], work: Path, threads: int | None) -> dict:
    featurizer = get_featurizer("efficientnet-lite0", work, threads)
    featurize_files(files[:16], featurizer, featurizer.input_size)  # warm-up
    t = time.perf_counter()
    fs = featurize_files(files, featurizer, featurizer.input_size, batch_size=32)
    ort_s = time.perf_counter() - t
    from labelfree.trainer.spark_features import get_spark, spark_featurize_files

    t = time.perf_counter()
    get_spark("local[2]")
    startup_s = time.perf_counter() - t
    spark_featurize_files(files[:16], featurizer.onnx_path, featurizer.input_size, master="local[2]")  # warm-up
    t = time.perf_counter()
    sp = spark_featurize_files(files, featurizer.onnx_path, featurizer.input_size, master="local[2]")
    spark_s = time.perf_counter() - t
    return {
        "n_images": len(files), "ort_images_per_s": round(len(fs.files) / ort_s, 1),
        "spark_local2_images_per_s": round(len(sp.files) / spark_s, 1), "spark_session_start_s": round(startup_s, 1),
        "spark_vs_local_max_abs_diff": float(np.abs(sp.features["full"] - fs.features["full"]).max()),
        "ort_threads": threads or "default",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=Path("../shared/data"))
    parser.add_argument("--work", type=Path, default=Path("/tmp/lf_cache/bench"))
    parser.add_argument("--store", type=Path, default=Path("/tmp/lf_cache/home/store"),
                        help="feature-cache store (reuse warms the quality runs)")
    parser.add_argument("--speed-images", type=int, default=256)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip-speed", action="store_true")
    args = parser.parse_args()
    d = args.data
    if not d.is_dir():
        raise SystemExit(f"no data at {d}")
    rng = np.random.default_rng(args.seed)
    store = LocalStore(args.store)
    negatives = list_images([d / "negatives" / n for n in ("imagenet", "coco", "scenes")])
    cats = sorted(p for p in (d / "bigcats").iterdir() if p.is_dir())
    results = {"load_average_at_start": os.getloadavg()}

    lion_neg = negatives + list_images([c for c in cats if c.name != "lions"])
    neg_keep, neg_held = hold_back(lion_neg, 0.2, rng)
    results["lion"] = quality("lion", list_images([d / "lion" / "pool"]), neg_keep, d / "lion" / "dev" / "images",
                              neg_held, args.work, store)
    print(json.dumps({"lion": results["lion"]}, indent=1), flush=True)

    sl_pos = list_images([d / "bigcats" / "snow_leopard"])
    sl_neg = negatives + list_images([c for c in cats if c.name != "snow_leopard"])
    pos_keep, pos_held = hold_back(sl_pos, 0.2, rng)
    neg_keep, neg_held = hold_back(sl_neg, 0.2, rng)
    results["snow_leopard"] = quality("snow_leopard", pos_keep, neg_keep, pos_held, neg_held, args.work, store)
    print(json.dumps({"snow_leopard": results["snow_leopard"]}, indent=1), flush=True)

    if not args.skip_speed:
        files = list_images([d / "lion" / "dev" / "images"])[: args.speed_images]
        results["speed"] = speed(files, args.work, None)
        print(json.dumps({"speed": results["speed"]}, indent=1), flush=True)
    results["load_average_at_end"] = os.getloadavg()
    args.work.mkdir(parents=True, exist_ok=True)
    (args.work / "bench_classifier.json").write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
