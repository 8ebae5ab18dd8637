"""The whole product on one machine: `labelfree run` from folders to a deployed detector (issue 9).

Starts `labelfree up` (embedded profile, its own data dir and ports), submits a dir-provider run
through the API, waits, prints wall time per step, then measures the deployed detector and its
teacher (the run's own classifier through the default labeller) against human boxes.

    nice -n 5 .venv/bin/python bench/bench_pipeline.py --concept lion --work /tmp/lf_full/lion \\
        --pos ../shared/data/lion/pool --neg ../shared/data/negatives \\
        --neg-cats ../shared/data/bigcats --gt ../shared/data/lion/dev/boxes.json \\
        --gt-images ../shared/data/lion/dev/images --positives 1000

``--neg-cats DIR`` adds every sub-folder of DIR except the concept's own (``lions`` for lion,
``snow_leopard`` for snow leopard) as a hard-negative folder. Without ``--gt`` only timings and
the report are produced (the snow-leopard run: no human boxes exist for it).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path
from urllib import request

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
OWN_FOLDER = {"lion": "lions", "snow leopard": "snow_leopard"}


def call(method: str, url: str, body: dict | None = None) -> dict:
    data = json.dumps(body).encode() if body is not None else None
    req = request.Request(url, data=data, method=method, headers={"content-type": "application/json"})
    with request.urlopen(req, timeout=30) as resp:
        return json.loads(resp.read())


def wait_ready(url: str, seconds: float = 120) -> None:
    deadline = time.time() + seconds
    while time.time() < deadline:
        try:
            with request.urlopen(url, timeout=2) as resp:
                if resp.status == 200:
                    return
        except OSError:
            pass
        time.sleep(1)
    raise SystemExit(f"{url} did not become ready in {seconds:.0f} s")


def step_seconds(step: dict) -> float | None:
    if not (step.get("started_at") and step.get("finished_at")):
        return None
    return (datetime.fromisoformat(step["finished_at"]) - datetime.fromisoformat(step["started_at"])).total_seconds()


def predictions_from_coco(path: Path) -> dict:
    data = json.loads(path.read_text())
    names = {im["id"]: Path(im["file_name"]).name for im in data["images"]}
    out: dict[str, tuple[list, list]] = {name: ([], []) for name in names.values()}
    for ann in data["annotations"]:
        x, y, w, h = ann["bbox"]
        out[names[ann["image_id"]]][0].append([x, y, x + w, y + h])
        out[names[ann["image_id"]]][1].append(float(ann.get("score", 1.0)))
    return {k: (np.array(b, float).reshape(-1, 4), np.array(s, float)) for k, (b, s) in out.items()}


def predictions_from_megadetector(path: Path, sizes: dict[str, tuple[int, int]]) -> dict:
    out = {}
    for entry in json.loads(path.read_text())["images"]:
        name = Path(entry["file"]).name
        h, w = sizes[name]
        dets = entry.get("detections") or []
        boxes = [[d["bbox"][0] * w, d["bbox"][1] * h, (d["bbox"][0] + d["bbox"][2]) * w,
                  (d["bbox"][1] + d["bbox"][3]) * h] for d in dets]
        out[name] = (np.array(boxes, float).reshape(-1, 4), np.array([d["conf"] for d in dets], float))
    return out


def evaluate(work: Path, store: Path, run: dict, gt: Path, gt_images: Path, env: dict) -> dict:
    from labelfree.explainer.metrics import load_coco_truths, summarise

    truths, sizes = load_coco_truths(gt)
    truths = {Path(k).name: v for k, v in truths.items()}
    sizes = {Path(k).name: v for k, v in sizes.items()}
    steps = {s["step"]: s for s in run["steps"]}
    classifier = store / steps["train"]["result"]["store_prefix"]
    detector = store / steps["train_detector"]["result"]["store_prefix"]
    teacher_json, det_json = work / "teacher_gt.json", work / "detector_gt.json"
    fitted = steps["explain"]["result"].get("foreground_key")  # the run's own fit on its positives
    kept_fit = ["--foreground", str(store / fitted)] if fitted else []
    timings = {}
    for name, cmd in (("teacher", ["explain", "--model", str(classifier), "--images", str(gt_images),
                                   "--out", str(teacher_json), *kept_fit]),
                      ("detector", ["detect", "--model", str(detector), "--images", str(gt_images),
                                    "--out", str(det_json), "--threshold", "0"])):
        t = time.perf_counter()
        subprocess.run([str(BIN / "labelfree"), *cmd], check=True, env=env, stdout=subprocess.DEVNULL)
        timings[name] = (time.perf_counter() - t) / len(truths)
    teacher = predictions_from_coco(teacher_json)
    detector_preds = predictions_from_megadetector(det_json, sizes)
    whole = {k: (np.array([[0, 0, w, h]], float), np.ones(1)) for k, (h, w) in sizes.items()}
    return {"teacher": summarise(teacher, truths), "detector": summarise(detector_preds, truths),
            "whole image": summarise(whole, truths),
            "seconds per image (CLI, incl. model load)": timings}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--concept", required=True)
    ap.add_argument("--work", type=Path, required=True, help="fresh folder: data dir, logs, report")
    ap.add_argument("--pos", type=Path, required=True)
    ap.add_argument("--neg", type=Path, action="append", default=[])
    ap.add_argument("--neg-cats", type=Path, help="folder of per-class folders; all but the concept's are negatives")
    ap.add_argument("--positives", type=int, default=1000)
    ap.add_argument("--gt", type=Path)
    ap.add_argument("--gt-images", type=Path)
    ap.add_argument("--port-base", type=int, default=8300)
    ap.add_argument("--timeout", type=float, default=4 * 3600)
    ap.add_argument("--options", type=json.loads, default={},
                    help='per-step options as JSON, e.g. \'{"detector": {"config": {"epochs": 12}}}\'')
    args = ap.parse_args()

    negs = [p.resolve() for p in args.neg]
    if args.neg_cats:
        own = OWN_FOLDER.get(args.concept, args.concept.replace(" ", "_"))
        negs += sorted(p.resolve() for p in args.neg_cats.iterdir() if p.is_dir() and p.name != own)
    work = args.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "LABELFREE_PROFILE": "embedded", "LABELFREE_DATA_DIR": str(work / "home"),
           "LABELFREE_LOG_JSON": "false"}
    for i, name in enumerate(("ingest", "trainer", "explainer", "inference", "grpc")):
        env[f"LABELFREE_{name.upper()}_PORT"] = str(args.port_base + 1 + i)
    base = f"http://127.0.0.1:{args.port_base + 1}"
    subprocess.run([str(BIN / "labelfree"), "db", "upgrade"], check=True, env=env, stdout=subprocess.DEVNULL)
    log = (work / "up.log").open("w")
    up = subprocess.Popen([str(BIN / "labelfree"), "up"], env=env, stdout=log, stderr=subprocess.STDOUT,
                          start_new_session=True)
    try:
        wait_ready(f"{base}/readyz")
        t0 = time.perf_counter()
        started = call("POST", f"{base}/v1/projects", {
            "query": args.concept, "provider": "dir", "positives": args.positives,
            "pos_dirs": [str(args.pos.resolve())], "neg_dirs": [str(p) for p in negs], "options": args.options})
        run_id = started["run_id"]
        print(f"run {run_id}: {args.concept}, positives {args.pos}, {len(negs)} negative folders", flush=True)
        last = None
        while True:
            run = call("GET", f"{base}/v1/runs/{run_id}")
            now = " ".join(f"{s['step']}={s['state']}:{s['progress']:.0%}" for s in run["steps"])
            if now != last:
                print(f"  {time.perf_counter() - t0:7.0f} s  {now}", flush=True)
                last = now
            if run["state"] in ("succeeded", "failed", "cancelled") or time.perf_counter() - t0 > args.timeout:
                break
            time.sleep(5)
        wall = time.perf_counter() - t0
        (work / "run.json").write_text(json.dumps(run, indent=1))
        print(f"\nrun {run['state']} in {wall:.0f} s" + (f": {run['error']}" if run.get("error") else ""))
        print("\n| step | wall s | result |\n| --- | --- | --- |")
        for step in run["steps"]:
            result = step.get("result") or {}
            brief = {k: result[k] for k in ("images", "boxes", "metrics") if k in result}
            if "metrics" in brief:
                brief["metrics"] = {k: round(v, 4) for k, v in brief["metrics"].items()
                                    if k in ("roc_auc", "pr_auc", "val_ap50", "val_corloc", "images_per_s")}
            print(f"| {step['step']} | {step_seconds(step) or 0:.0f} | {json.dumps(brief)} |")
        if run["state"] != "succeeded":
            raise SystemExit(1)
        report = work / "report.html"
        cmd = [str(BIN / "labelfree"), "report", run_id, "--out", str(report)]
        if args.gt and args.gt_images:
            cmd += ["--gt", str(args.gt), "--gt-images", str(args.gt_images)]
        done = subprocess.run(cmd, env=env, capture_output=True, text=True)
        print(f"\nreport: {report} ({'ok' if done.returncode == 0 else done.stderr.strip()[-300:]})")
        if args.gt and args.gt_images:
            scores = evaluate(work, work / "home" / "store", run, args.gt, args.gt_images, env)
            (work / "evaluation.json").write_text(json.dumps(scores, indent=1))
            print(f"\n| on {args.gt_images} | AP@0.5 | CorLoc | mean IoU |\n| --- | --- | --- | --- |")
            for name in ("whole image", "teacher", "detector"):
                s = scores[name]
                print(f"| {name} | {s['ap50']:.3f} | {s['corloc']:.3f} | {s['miou']:.3f} |")
            print(f"seconds per image through the CLIs (model load included): "
                  f"{json.dumps({k: round(v, 4) for k, v in scores['seconds per image (CLI, incl. model load)'].items()})}")
    finally:
        os.killpg(up.pid, signal.SIGINT)
        try:
            up.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(up.pid, signal.SIGKILL)


if __name__ == "__main__":
    main()
