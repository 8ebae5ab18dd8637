"""``labelfree train-classifier`` and ``labelfree classify`` (architecture.md, CLI contract).

Both work on plain folders and need no running servers. Bad input exits with code 2 and a
one-line reason on stderr.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import List, Optional

import typer

from labelfree.core.errors import LabelfreeError

app = typer.Typer(add_completion=False)


def _fail(message: str) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(2)


@app.command("train-classifier")
def train_classifier_cmd(
    pos: List[Path] = typer.Option(..., "--pos", help="folder of positive images (repeatable; sub-folders read)"),
    neg: List[Path] = typer.Option(..., "--neg", help="folder of negative images (repeatable; sub-folders read)"),
    out: Path = typer.Option(..., "--out", help="MODEL_DIR to write model.onnx, manifest.json, metrics.json"),
    backbone: Optional[str] = typer.Option(None, help="backbone name (default: LABELFREE_BACKBONE)"),
    augment: bool = typer.Option(False, "--augment/--no-augment", help="add flipped and cropped views"),
    val_fraction: float = typer.Option(0.2, min=0.05, max=0.45, help="share of phash groups held out"),
    seed: int = typer.Option(0, help="seed of the train/validation split and CV folds"),
    batch_size: int = typer.Option(32, min=1, max=1024),
    spark_master: Optional[str] = typer.Option(None, help="featurise through Spark on this master, e.g. local[2]"),
    cache: bool = typer.Option(True, "--cache/--no-cache", help="reuse features cached in the object store"),
) -> None:
    """Train backbone features + logistic regression on folders; write MODEL_DIR."""
    from labelfree.core.settings import get_settings
    from labelfree.trainer.train import train_classifier

    settings = get_settings()
    for d in (*pos, *neg):
        if not d.is_dir():
            _fail(f"{d} is not a directory")
    store = None
    if cache:
        from labelfree.core.store import get_store

        store = get_store()
    try:
        metrics = train_classifier(
            pos, neg, out, backbone=backbone or settings.backbone, work_dir=settings.data_dir / "cache",
            store=store, augment=("flip", "crop") if augment else (), val_fraction=val_fraction, seed=seed,
            batch_size=batch_size, spark_master=spark_master,
        )
    except (ValueError, LabelfreeError) as exc:
        _fail(getattr(exc, "detail", None) or str(exc))
    v, c = metrics["validation"], metrics["counts"]
    typer.echo(
        f"wrote {out}: {c['positive']} positive / {c['negative']} negative images, {c['skipped']} skipped; "
        f"validation ROC-AUC {v['roc_auc']:.4f}, PR-AUC {v['pr_auc']:.4f}, accuracy {v['accuracy']:.4f} "
        f"at threshold {v['threshold']:.3f}; C={metrics['cv']['C']:g}",
        err=True,
    )


@app.command("classify")
def classify_cmd(
    model: Path = typer.Option(..., "--model", help="MODEL_DIR written by train-classifier"),
    images: Path = typer.Option(..., "--images", help="folder of images (sub-folders read)"),
    out: Path = typer.Option(..., "--out", help="CSV to write, columns file,score ('-' for stdout)"),
    batch_size: int = typer.Option(32, min=1, max=1024),
) -> None:
    """Score every image in a folder: P(positive) per file."""
    from labelfree.trainer.predict import classify_folder, write_scores

    if not images.is_dir():
        _fail(f"{images} is not a directory")
    try:
        rows, skipped = classify_folder(model, images, batch_size=batch_size)
    except (ValueError, LabelfreeError) as exc:
        _fail(getattr(exc, "detail", None) or str(exc))
    write_scores(rows, sys.stdout if str(out) == "-" else out)
    typer.echo(f"scored {len(rows)} images, {len(skipped)} unreadable skipped", err=True)
    for path, reason in skipped[:10]:
        typer.echo(f"skipped {path}: {reason}", err=True)
