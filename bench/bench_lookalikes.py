"""How often detectors box photos of look-alike species they never trained on.

lion/dev has no negative photos, so its AP cannot see a detector that fires on pumas. This bench
splits ``bigcats/<class>/`` in two (every other file by name): ``split`` links the negatives a
build may train on (the given folders plus the first half of each class but the concept's) into
one folder, and ``score`` runs each DET_DIR over the held-out half and reports, per class, the
share of photos whose top detection reaches the confidence threshold (default 0.5) and the
median top confidence. The concept's own class is scored too: that share is recall on photos
from another source.

    python bench/bench_lookalikes.py split --bigcats ../shared/data/bigcats --concept lions \\
        --neg ../shared/data/negatives --out /tmp/negs_half
    python bench/bench_lookalikes.py score --bigcats ../shared/data/bigcats --concept lions \\
        --det /tmp/sweep/base_s0 /tmp/sweep/hard10_s0 --json /tmp/lookalikes.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from labelfree.core.images import iter_image_files  # noqa: E402
from labelfree.trainer.detector.infer import detect_folder  # noqa: E402


def halves(bigcats: Path) -> dict[str, tuple[list[Path], list[Path]]]:
    """Per class folder: (files a build may train on, held-out files), every other file by name."""
    out = {}
    for folder in sorted(p for p in bigcats.iterdir() if p.is_dir()):
        files = sorted(iter_image_files([folder]))
        out[folder.name] = (files[0::2], files[1::2])
    if not out:
        raise SystemExit(f"{bigcats} has no class folders")
    return out


def _link(dest: Path, files: list[Path], prefix: str, root: Path | None = None) -> int:
    """Symlink ``files`` into ``dest`` as ``<prefix>_<path under root, '/' as '_'>``."""
    dest.mkdir(parents=True, exist_ok=True)
    for f in files:
        name = f.relative_to(root).as_posix().replace("/", "_") if root else f.name
        link = dest / f"{prefix}_{name}"
        if not link.exists():
            link.symlink_to(f.resolve())
    return len(files)


def split(args) -> None:
    parts = halves(args.bigcats)
    if args.concept not in parts:
        raise SystemExit(f"--concept {args.concept!r} is not a folder of {args.bigcats}: {sorted(parts)}")
    n = 0
    for name, (train, _) in parts.items():
        if name != args.concept:
            n += _link(args.out, train, f"bigcats_{name}")
    for folder in args.neg:
        files = list(iter_image_files([folder]))
        n += _link(args.out, files, Path(folder).name, Path(folder))
    print(f"{args.out}: {n} negatives linked (held out: the second half of each class under {args.bigcats})")


def score_one(det: Path, parts: dict, threshold: float, threads: int | None) -> dict:
    rows = {}
    for name, (_, held_out) in parts.items():
        with tempfile.TemporaryDirectory() as tmp:
            _link(Path(tmp), held_out, name)
            doc = detect_folder(det, tmp, threshold=0.0, threads=threads)
        tops = [max((d["conf"] for d in e.get("detections") or []), default=0.0) for e in doc["images"]]
        rows[name] = {"n": len(tops), "boxed": round(sum(t >= threshold for t in tops) / max(len(tops), 1), 4),
                      "median_top": round(statistics.median(tops), 4) if tops else None}
    return rows


def score(args) -> None:
    parts = halves(args.bigcats)
    results = {str(det): score_one(det, parts, args.threshold, args.threads) for det in args.det}
    names = list(parts)
    print(f"share of held-out photos whose top box has conf >= {args.threshold} (concept: {args.concept})")
    print("| detector | " + " | ".join(f"{n} ({len(parts[n][1])})" for n in names) + " |")
    print("|---|" + "---|" * len(names))
    for det, rows in results.items():
        print(f"| {det} | " + " | ".join(f"{rows[n]['boxed']:.2f}" for n in names) + " |")
    if args.json:
        args.json.write_text(json.dumps({"threshold": args.threshold, "concept": args.concept,
                                         "results": results}, indent=1))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="command", required=True)
    s = sub.add_parser("split", help="link a training-negatives folder that leaves half of each class out")
    s.add_argument("--bigcats", type=Path, required=True)
    s.add_argument("--concept", required=True, help="the class folder that holds the concept (not a negative)")
    s.add_argument("--neg", type=Path, nargs="*", default=[], help="further negative folders, linked whole")
    s.add_argument("--out", type=Path, required=True)
    c = sub.add_parser("score", help="each DET_DIR on the held-out halves")
    c.add_argument("--bigcats", type=Path, required=True)
    c.add_argument("--concept", required=True)
    c.add_argument("--det", type=Path, nargs="+", required=True)
    c.add_argument("--threshold", type=float, default=0.5)
    c.add_argument("--threads", type=int, default=None)
    c.add_argument("--json", type=Path)
    args = ap.parse_args()
    if args.command == "split":
        split(args)
    else:
        score(args)


if __name__ == "__main__":
    main()
