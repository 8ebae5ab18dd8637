"""``labelfree train-detector`` and ``labelfree detect`` (merged into the main CLI).

Bad input ends with a one-line reason and exit status 2 (ValueError and LabelfreeError are
turned into that by the main CLI; here the same happens when the module runs alone).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional

import typer

from labelfree.trainer.detector import (BACKBONE_MODE, CALIBRATE, EMA, EPOCHS, GROUP_REPEAT, HARD_NEGATIVES, KEEP,
                                        KEEP_CHOICES, MIN_STEPS, NEG_FRACTION, PASTE, PASTE_COVER, PASTE_MAX,
                                        SOFT_CANDIDATES)

app = typer.Typer(no_args_is_help=True, add_completion=False)


def _fail(message: str) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(2)


@app.command("train-detector")
def train_detector_cmd(
    images: Path = typer.Option(..., "--images", help="folder the boxes' file_name values are relative to"),
    boxes: Path = typer.Option(..., "--boxes", help="COCO-style boxes.json (e.g. from `labelfree explain`)"),
    out: Path = typer.Option(..., "--out", help="DET_DIR to write"),
    neg: Optional[List[Path]] = typer.Option(None, "--neg", help="folder of images without the object (repeatable)"),
    epochs: int = typer.Option(EPOCHS, min=1),
    min_steps: int = typer.Option(MIN_STEPS, "--min-steps", min=0,
                                  help="train at least this many steps: small folders get more epochs (0: off)"),
    input_size: int = typer.Option(128, "--input-size",
                                   help="S of the S x S model input, a multiple of 32 (128 measured as good as 256 "
                                        "on lion/dev at a third of the cost; raise it for small animals)"),
    batch_size: int = typer.Option(16, "--batch-size", min=1),
    device: str = typer.Option("auto", help="auto, cpu or cuda"),
    backbone_mode: str = typer.Option("auto", "--backbone-mode",
                                     help=f"frozen, top (the last stage trains), all, or auto (= {BACKBONE_MODE})"),
    instance_kind: str = typer.Option("cpu", "--instance-kind", help="Triton instance group: cpu or gpu"),
    seed: int = typer.Option(0),
    unboxed_negative: bool = typer.Option(False, "--unboxed-negative",
                                          help="train images listed without boxes as negatives (default: skip them)"),
    self_train_rounds: int = typer.Option(1, "--self-train-rounds", min=0,
                                          help="relabel with the detector and retrain this many times"),
    hard_negatives: float = typer.Option(
        HARD_NEGATIVES, "--hard-negatives", min=0.0, max=100.0,
        help="in self-training rounds, draw a negative 1 + this x the last round's top score on it times as often "
             "(0: every negative equally often)"),
    soft_candidates: bool = typer.Option(
        SOFT_CANDIDATES, "--soft-candidates/--no-soft-candidates",
        help="train on the teacher's ranked candidate boxes too, as soft targets: each centre taught its score "
             "relative to the image's top box (off by default: the labels only)"),
    neg_fraction: float = typer.Option(NEG_FRACTION, "--neg-fraction", min=0.0, max=0.9,
                                       help="share of each epoch that is negative photos (0.4 boxes fewer look-alikes "
                                            "and misses more animals at conf 0.5)"),
    mosaic: float = typer.Option(0.0, "--mosaic", min=0.0, max=1.0,
                                 help="share of training views that are 2x2 mosaics of four images"),
    paste: float = typer.Option(PASTE, "--paste", min=0.0, max=1.0,
                                help="share of training views given more animals cut from one-box photos "
                                     "(see --paste-max)"),
    paste_cover: float = typer.Option(PASTE_COVER, "--paste-cover", min=0.0, max=1.0,
                                      help="the most of an animal already in a view that a pasted one may cover "
                                           "(share of that animal's box)"),
    paste_max: int = typer.Option(PASTE_MAX, "--paste-max", min=1, max=8,
                                  help="animals pasted into one view at most: the first, then each further one "
                                       "with even odds"),
    group_repeat: int = typer.Option(GROUP_REPEAT, "--group-repeat", min=1, max=8,
                                     help="times per epoch a photo whose labels hold two or more animals is seen"),
    ema: float = typer.Option(EMA, "--ema", min=0.0, max=0.9999,
                              help="decay per step of the moving average of the weights that is validated and "
                                   "exported (0: off)"),
    keep: str = typer.Option(KEEP, "--keep",
                             help="weights to export: last (the end of the schedule, averaged) or best (the epoch "
                                  "that agreed best with the held-out pseudo-boxes)"),
    calibrate: bool = typer.Option(CALIBRATE, "--calibrate/--no-calibrate",
                                   help="Platt-scale the exported scores on the held-out split against the teacher's "
                                        "boxes, so a confidence threshold means the same for every detector"),
    int8: Optional[bool] = typer.Option(None, "--int8/--fp32",
                                        help="deploy the int8 (QDQ) graph calibrated on training images, or the "
                                             "fp32 one (default: int8 for a cpu instance kind, fp32 for gpu)"),
    threads: Optional[int] = typer.Option(None, help="CPU threads for training (default: torch's)"),
    workers: int = typer.Option(0, "--workers", min=0,
                                help="data-loading processes (decode + augment); worth it when a GPU trains"),
    resume: bool = typer.Option(True, help="continue from DET_DIR/checkpoints/last.pt when present"),
) -> None:
    """Train a detector on pseudo-boxes and export it (ONNX + Triton repository)."""
    from labelfree.trainer.detector.build import build_detector
    from labelfree.trainer.detector.train import TrainConfig

    if instance_kind not in ("cpu", "gpu"):
        _fail(f"--instance-kind must be cpu or gpu, got {instance_kind!r}")
    if keep not in KEEP_CHOICES:
        _fail(f"--keep must be one of {', '.join(KEEP_CHOICES)}, got {keep!r}")
    try:
        config = TrainConfig(input_size=input_size, epochs=epochs, min_steps=min_steps, batch_size=batch_size,
                             device=device,
                             backbone_mode=backbone_mode, seed=seed, threads=threads, mosaic=mosaic, paste=paste,
                             paste_cover=paste_cover, paste_max=paste_max, group_repeat=group_repeat, ema=ema,
                             keep=keep, neg_fraction=neg_fraction,
                             num_workers=workers)
        config.validate()
        manifest = build_detector(images, boxes, out, negatives=neg or (), config=config,
                                  instance_kind=instance_kind, resume=resume,
                                  unboxed_as_negative=unboxed_negative, self_train_rounds=self_train_rounds,
                                  hard_negatives=hard_negatives,
                                  int8=int8, soft_candidates=soft_candidates, calibrate=calibrate)
    except (ValueError, FileNotFoundError) as exc:
        _fail(str(exc))
    metrics = manifest["metrics"]
    typer.echo(f"wrote {out} (val vs pseudo-boxes: " + ", ".join(
        f"{k.removeprefix('val_')}={v:.3f}" for k, v in metrics.items() if k.startswith("val_")) + ")", err=True)
    scores = manifest["training"]["score_calibration"]
    typer.echo("scores calibrated: " + (f"logit x {scores['scale']:.3f} + {scores['bias']:.3f} on "
                                        f"{scores['n_detections']} held-out detections" if scores["fitted"]
                                        else f"no ({scores['reason']})"), err=True)


@app.command("detect")
def detect_cmd(
    model: Path = typer.Option(..., "--model", help="DET_DIR from train-detector"),
    images: Path = typer.Option(..., "--images", help="folder of images (read recursively)"),
    out: Path = typer.Option(..., "--out", help="detections.json (MegaDetector batch format 1.x)"),
    threshold: float = typer.Option(0.1, min=0.0, max=1.0, help="keep detections with conf >= this"),
    batch_size: int = typer.Option(16, "--batch-size", min=1),
    threads: Optional[int] = typer.Option(None, help="ONNX Runtime intra-op threads"),
    csv: Optional[Path] = typer.Option(None, "--csv", help="also write one CSV row per detection"),
) -> None:
    """Detect objects in a folder and write MegaDetector-format JSON (``file`` relative to --images)."""
    from labelfree.core.megadetector import write_csv
    from labelfree.trainer.detector.infer import detect_folder

    try:
        doc = detect_folder(model, images, threshold=threshold, batch_size=batch_size, threads=threads)
    except (ValueError, FileNotFoundError) as exc:
        _fail(str(exc))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=1) + "\n")
    if csv is not None:
        write_csv(doc, csv)
    failed = sum(1 for im in doc["images"] if im.get("failure"))
    found = sum(len(im["detections"] or []) for im in doc["images"])
    typer.echo(f"wrote {out}: {len(doc['images'])} images, {found} detections, {failed} failed", err=True)


if __name__ == "__main__":
    app()
