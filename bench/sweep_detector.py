"""Detector variants x seeds, trained side by side and scored on lion/dev human boxes.

One detector decides nothing smaller than about 0.025 AP here (bench/results/detector.md): two
runs of the same flags differed by that much. This bench trains every variant with several
seeds, ``--parallel`` at a time (each in its own process), and reports the mean and spread of
AP@0.5, CorLoc and mean IoU per variant, on all dev photos and on photos of one lion and of
groups apart, for the deployed graph (int8 on a CPU instance) and the fp32 one.

A variant is ``NAME=JSON``: TrainConfig fields (``input_size``, ``backbone_mode``, ``paste``,
``epochs``, ...) and ``build_detector`` keywords (``self_train_rounds``, ``min_relative_score``,
``soft_candidates``, ``calibrate``, ...). ``--set KEY=JSON`` applies to every variant (e.g.
``device="cuda"``, ``num_workers=2``). Quality only: cost is bench_detector.py's job.

    .venv/bin/python bench/sweep_detector.py --pool <DET images> --boxes <explain boxes.json> \\
        --neg ../shared/data/negatives/imagenet --out /tmp/sweep \\
        --variant base='{}' --variant top='{"backbone_mode": "top"}' --seeds 0 1 --parallel 2
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import traceback
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import fields
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_detector import DATA, by_animal_count, md_predictions, recall_any, rounded  # noqa: E402

GRAPHS = {"int8": "model.onnx", "fp32": "model_fp32.onnx"}


def split_spec(spec: dict) -> tuple[dict, dict]:
    """Variant overrides -> (TrainConfig fields, build_detector keywords)."""
    from labelfree.trainer.detector.train import TrainConfig

    names = {f.name for f in fields(TrainConfig)}
    return ({k: v for k, v in spec.items() if k in names}, {k: v for k, v in spec.items() if k not in names})


def evaluate(det_dir: Path, dev: Path, threads: int) -> dict:
    """Deployed (int8 when written) and fp32 graphs on ``dev/images`` against ``dev/boxes.json``."""
    from labelfree.explainer.metrics import load_coco_truths, summarise
    from labelfree.trainer.detector.infer import detect_folder

    truths, sizes = load_coco_truths(dev / "boxes.json")
    out = {}
    for precision, graph in GRAPHS.items():
        if not (det_dir / graph).is_file():
            continue
        doc = detect_folder(det_dir, dev / "images", threshold=0.0, threads=threads, batch_size=16, graph=graph)
        preds = md_predictions(doc, sizes)
        out[precision] = {**rounded({**summarise(preds, truths), "recall_any": recall_any(preds, truths)}),
                          **by_animal_count(preds, truths, summarise)}
    return out


def run_one(job: dict) -> dict:
    """Train one (variant, seed) and score it; every failure is returned, not raised."""
    import torch

    from labelfree.trainer.detector.build import build_detector
    from labelfree.trainer.detector.train import TrainConfig

    torch.set_num_threads(job["threads"])
    det_dir = Path(job["out"])
    log = det_dir.with_suffix(".log")
    det_dir.parent.mkdir(parents=True, exist_ok=True)
    result = {"variant": job["variant"], "seed": job["seed"], "det_dir": str(det_dir)}
    start = time.perf_counter()
    try:
        with open(log, "w") as fh:
            os.dup2(fh.fileno(), 1)
            os.dup2(fh.fileno(), 2)
            config_kw, build_kw = split_spec(job["spec"])
            config = TrainConfig(**{"threads": job["threads"], **config_kw, "seed": job["seed"]})
            if not (det_dir / "manifest.json").is_file():
                manifest = build_detector(job["pool"], job["boxes"], det_dir, negatives=job["neg"], config=config,
                                          show_progress=False, **build_kw)
            else:
                manifest = json.loads((det_dir / "manifest.json").read_text())
            result["train_s"] = round(time.perf_counter() - start, 1)
            result["val_vs_teacher"] = manifest.get("metrics")
            result["dev"] = evaluate(det_dir, Path(job["dev"]), job["threads"])
    except Exception:  # noqa: BLE001 - one failed variant must not lose the others
        result["error"] = traceback.format_exc()[-2000:]
    return result


def run_in_process(job: dict) -> dict:
    """``run_one`` in a child process of this script; its result comes back as JSON on a file."""
    result_file = Path(job["out"]).with_suffix(".result.json")
    Path(job["out"]).parent.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, __file__, "--job", json.dumps(job)], check=False)
    if not result_file.is_file():
        return {"variant": job["variant"], "seed": job["seed"], "error": "the run's process died (see its .log)"}
    return json.loads(result_file.read_text())


def aggregate(results: list[dict]) -> dict:
    """Per variant and graph: mean and spread over seeds of the headline numbers."""
    picks = {"ap": ("ap50",), "corloc": ("corloc",), "miou": ("miou",),
             "one_ap": ("one_box", "ap50"), "one_corloc": ("one_box", "corloc"),
             "grp_ap": ("several_boxes", "ap50"), "grp_corloc": ("several_boxes", "corloc"),
             "grp_recall": ("several_boxes", "recall_any"), "one_no_box_0.5": ("one_box", "no_box_at_0.5")}
    table: dict = {}
    for r in results:
        for precision, metrics in (r.get("dev") or {}).items():
            row = table.setdefault(f"{r['variant']} {precision}", {k: [] for k in picks})
            for key, path in picks.items():
                value = metrics
                for p in path:
                    value = value[p]
                row[key].append(value)
    return {name: {k: (round(float(np.mean(v)), 4), round(float(np.std(v)), 4), len(v)) for k, v in row.items()}
            for name, row in table.items()}


def markdown(summary: dict) -> str:
    keys = ["ap", "corloc", "miou", "one_ap", "one_corloc", "grp_ap", "grp_corloc", "grp_recall", "one_no_box_0.5"]
    lines = ["| variant | n | " + " | ".join(keys) + " |", "|---|---|" + "---|" * len(keys)]
    for name, row in sorted(summary.items()):
        cells = [f"{row[k][0]:.3f} ± {row[k][1]:.3f}" for k in keys]
        lines.append(f"| {name} | {row['ap'][2]} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def parse_pairs(items: list[str], what: str) -> dict:
    out = {}
    for item in items:
        name, sep, text = item.partition("=")
        if not sep:
            raise SystemExit(f"error: {what} {item!r} is not NAME=JSON")
        try:
            out[name] = json.loads(text)
        except json.JSONDecodeError as exc:
            raise SystemExit(f"error: {what} {name}: {exc}") from exc
    return out


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "--job":
        job = json.loads(sys.argv[2])
        result = run_one(job)
        Path(job["out"]).with_suffix(".result.json").write_text(json.dumps(result))
        return
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pool", type=Path, required=True, help="folder the --boxes file_name values are relative to")
    ap.add_argument("--boxes", type=Path, required=True, help="teacher boxes of --pool (COCO)")
    ap.add_argument("--neg", type=Path, action="append", default=[])
    ap.add_argument("--dev", type=Path, default=DATA / "lion" / "dev", help="folder with images/ and boxes.json")
    ap.add_argument("--out", type=Path, required=True, help="parent of the DET_DIRs (<variant>_s<seed>)")
    ap.add_argument("--variant", action="append", default=[], help="NAME=JSON overrides (repeatable)")
    ap.add_argument("--set", action="append", default=[], help="KEY=JSON applied to every variant (repeatable)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--parallel", type=int, default=1)
    ap.add_argument("--threads", type=int, default=None, help="CPU threads per run (default: cores / parallel)")
    ap.add_argument("--json", type=Path, help="also write every run and the summary here")
    args = ap.parse_args()

    variants = parse_pairs(args.variant, "--variant") or {"base": {}}
    common = parse_pairs(args.set, "--set")
    threads = args.threads or max(1, (os.cpu_count() or 1) // args.parallel)
    jobs = [{"variant": name, "seed": seed, "spec": {**common, **spec}, "out": str(args.out / f"{name}_s{seed}"),
             "pool": str(args.pool), "boxes": str(args.boxes), "neg": [str(n) for n in args.neg],
             "dev": str(args.dev), "threads": threads}
            for seed in args.seeds for name, spec in variants.items()]
    for job in jobs:  # fail on a bad key before anything trains
        from labelfree.trainer.detector.train import TrainConfig

        config_kw, _ = split_spec(job["spec"])
        TrainConfig(**config_kw).validate()
    start = time.perf_counter()
    results = []
    # Each run is its own process (not a multiprocessing pool worker: those are daemons, and a
    # daemon may not start the data-loading processes a GPU run uses).
    with ThreadPoolExecutor(args.parallel) as pool:
        for future in as_completed([pool.submit(run_in_process, job) for job in jobs]):
            result = future.result()
            results.append(result)
            status = "FAILED" if "error" in result else f"{result.get('train_s')} s"
            print(f"[{time.perf_counter() - start:6.0f} s] {result['variant']} seed {result['seed']}: {status}",
                  flush=True)
            if "error" in result:
                print(result["error"], flush=True)
            write(args.json, variants, common, args.seeds, results)  # a run cut short keeps what finished
    print(markdown(write(args.json, variants, common, args.seeds, results)))


def write(path: Path | None, variants: dict, common: dict, seeds: list[int], results: list[dict]) -> dict:
    summary = aggregate(results)
    if path:
        path.write_text(json.dumps({"variants": variants, "common": common, "seeds": seeds, "runs": results,
                                    "summary": summary}, indent=1) + "\n")
    return summary


if __name__ == "__main__":
    main()
