"""Pack a detector training set into .devdata/ small enough for a device run (64 MiB a call).

The pool photos and negatives are shrunk so that their long side is at most ``--side`` pixels
(JPEG ``--quality``), and the teacher's COCO boxes are scaled with them; lion/dev (the human
boxes the detectors are scored on) travels as is. ``.devdata/`` is git-ignored.

    .venv/bin/python bench/pack_devdata.py --pool <DET images> --boxes <explain boxes.json> \\
        --neg <run>/home/work/negatives --teacher <run>/teacher_gt.json --out .devdata
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

from PIL import Image

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def shrink(src: Path, dst: Path, side: int, quality: int) -> float:
    """Write ``src`` with its long side <= ``side``; returns the scale applied."""
    with Image.open(src) as im:
        im = im.convert("RGB")
        scale = min(1.0, side / max(im.size))
        if scale < 1.0:
            im = im.resize((max(1, round(im.width * scale)), max(1, round(im.height * scale))),
                           Image.Resampling.LANCZOS)
        dst.parent.mkdir(parents=True, exist_ok=True)
        im.save(dst, "JPEG", quality=quality)
    return scale


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pool", type=Path, required=True)
    ap.add_argument("--boxes", type=Path, required=True)
    ap.add_argument("--neg", type=Path, action="append", default=[])
    ap.add_argument("--max-neg", type=int, default=0, help="keep at most this many negatives (0: all)")
    ap.add_argument("--dev", type=Path, default=DATA / "lion" / "dev")
    ap.add_argument("--teacher", type=Path, help="the teacher's boxes of the dev images")
    ap.add_argument("--out", type=Path, default=Path(".devdata"))
    ap.add_argument("--side", type=int, default=256)
    ap.add_argument("--quality", type=int, default=80)
    args = ap.parse_args()

    doc = json.loads(args.boxes.read_text())
    scales = {}
    for image in doc["images"]:
        src = args.pool / image["file_name"]
        scale = shrink(src, args.out / "pool" / image["file_name"], args.side, args.quality)
        scales[image["id"]] = scale
        image["width"], image["height"] = round(image["width"] * scale), round(image["height"] * scale)
    for ann in doc["annotations"]:
        s = scales[ann["image_id"]]
        ann["bbox"] = [v * s for v in ann["bbox"]]
        if "area" in ann:
            ann["area"] = ann["area"] * s * s
    (args.out / "pool_boxes.json").write_text(json.dumps(doc))

    negs = sorted(p for root in args.neg for p in root.rglob("*")
                  if p.suffix.lower() in (".jpg", ".jpeg", ".png") and p.is_file())
    if args.max_neg:
        negs = negs[:: max(1, len(negs) // args.max_neg)][: args.max_neg]
    for i, path in enumerate(negs):
        shrink(path, args.out / "neg" / f"{i:05d}.jpg", args.side, args.quality)

    if (args.out / "dev").exists():
        shutil.rmtree(args.out / "dev")
    shutil.copytree(args.dev, args.out / "dev")
    if args.teacher:
        shutil.copy(args.teacher, args.out / "teacher_gt.json")
    size = sum(p.stat().st_size for p in args.out.rglob("*") if p.is_file())
    print(f"{len(doc['images'])} pool photos, {len(doc['annotations'])} boxes, {len(negs)} negatives; "
          f"{size / 2**20:.1f} MiB in {args.out}")


if __name__ == "__main__":
    main()
