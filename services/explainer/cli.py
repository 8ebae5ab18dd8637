"""``labelfree explain``: boxes for a folder of positive images from a classifier, no labels needed."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Optional

import typer

from labelfree.core.errors import LabelfreeError

app = typer.Typer(add_completion=False)


def _fail(message: str) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(2)


@app.command("explain")
def explain_cmd(
    model: Path = typer.Option(..., "--model", help="classifier MODEL_DIR (model.onnx + manifest.json)"),
    images: Path = typer.Option(..., "--images", help="folder of images (sub-folders are read)"),
    out: Path = typer.Option(..., "--out", help="COCO-style boxes.json to write"),
    samples: int = typer.Option(256, "--samples", help="LIME perturbations per image"),
    method: str = typer.Option("foreground", "--method",
                               help="foreground (default, measured best) | cam | lime | lime+cam; "
                                    "--samples is for lime*"),
    segments: int = typer.Option(80, "--segments", help="SLIC superpixels per image"),
    seed: int = typer.Option(0, "--seed", help="seed of the LIME masks (per image: seed + file name)"),
    overlays: Optional[Path] = typer.Option(None, "--overlays", help="also write one overlay PNG per image here"),
    spark_master: Optional[str] = typer.Option(None, "--spark-master",
                                               help="run as a Spark job on this master (e.g. local[2])"),
    category: Optional[str] = typer.Option(None, "--category", help="category name (default: from the manifest)"),
    fit_images: Optional[Path] = typer.Option(None, "--fit-images",
                                              help="foreground: fit on these positives (default: --images)"),
    foreground: Optional[Path] = typer.Option(None, "--foreground",
                                              help="foreground: load this fitted model JSON instead of fitting"),
    save_foreground: Optional[Path] = typer.Option(None, "--save-foreground",
                                                   help="foreground: also write the fitted model JSON here"),
    device: str = typer.Option("auto", "--device",
                               help="auto (a GPU when one is usable), cpu or cuda: where the classifier runs"),
    fg_rounds: int = typer.Option(10, "--fg-rounds",
                                  help="foreground: at most this many self-training refits (0: the CAM-taught "
                                       "fit); without Spark each positive's features (300 KB) stay in memory"),
    fine: bool = typer.Option(True, "--fine/--no-fine",
                              help="foreground: add a second level fitted on the stride-16 features"),
    candidates: bool = typer.Option(True, "--candidates/--no-candidates",
                                    help="foreground: add ranked candidate boxes from a finer grid"),
) -> None:
    """Write COCO-style boxes (pixels, file_name relative to --images), one or more per image."""
    from labelfree.core.images import iter_image_files
    from labelfree.explainer.batch import ModelLabeller, label_record
    from labelfree.explainer.coco import to_coco, write_coco
    from labelfree.explainer.labeller import LabelConfig

    if not (model / "model.onnx").is_file():
        _fail(f"{model} is not a classifier MODEL_DIR (no model.onnx)")
    if not images.is_dir():
        _fail(f"{images} is not a directory")
    if samples < 2:
        _fail(f"--samples must be >= 2, got {samples}")
    try:
        config = LabelConfig(method=method, n_samples=samples, n_segments=segments, fg_rounds=fg_rounds,
                             fg_fine=fine, candidate_side=LabelConfig.candidate_side if candidates else None)
    except ValueError as exc:
        _fail(str(exc))
    items = [(str(p.relative_to(images)), str(p)) for p in iter_image_files([images])]
    if not items:
        _fail(f"no images under {images}")
    if fit_images is not None and not fit_images.is_dir():
        _fail(f"{fit_images} is not a directory")
    if foreground is not None and not foreground.is_file():
        _fail(f"{foreground} is not a file")
    start = time.monotonic()
    try:
        labeller = ModelLabeller(model, config, device=device)
    except LabelfreeError as exc:
        _fail(exc.detail)
    except ValueError as exc:
        _fail(str(exc))
    name = category or _category(labeller.model.manifest)
    fitted = None
    if config.method == "foreground":
        fitted = _foreground(labeller, items, fit_images, foreground, spark_master)
        if save_foreground is not None:
            save_foreground.parent.mkdir(parents=True, exist_ok=True)
            save_foreground.write_text(json.dumps(fitted.to_dict()))
    if spark_master:
        from labelfree.explainer.spark_job import explain_with_spark

        records = explain_with_spark(items, model, master=spark_master, config=config, seed=seed,
                                     foreground=fitted)
    else:
        records = []
        for i, (key, path) in enumerate(items, 1):
            record, image, labelled = label_record(labeller, key, path, seed, keep=overlays is not None)
            records.append(record)
            if overlays is not None and image is not None:
                from labelfree.explainer.overlay import save_overlay

                save_overlay(image, labelled, overlays / (key + ".png"))
            if sys.stderr.isatty() and i % 10 == 0:
                typer.echo(f"{i}/{len(items)}", err=True)
    data = to_coco(records, name)
    write_coco(data, out)
    elapsed = time.monotonic() - start
    skipped = data["skipped"]
    typer.echo(f"{len(data['images'])} images, {len(data['annotations'])} boxes, {len(skipped)} skipped "
               f"in {elapsed:.1f}s -> {out}", err=True)
    for item in skipped:
        typer.echo(f"skipped {item['file_name']}: {item['error']}", err=True)


def _foreground(labeller, items, fit_images, path, spark_master):
    """The fitted foreground model: loaded from ``path``, else fitted on ``fit_images`` or the items."""
    from labelfree.core.images import iter_image_files
    from labelfree.explainer.batch import fit_foreground
    from labelfree.explainer.foreground import ForegroundModel

    try:
        if path is not None:
            labeller.foreground = ForegroundModel.from_dict(json.loads(path.read_text()))
            return labeller.foreground
        paths = [str(p) for p in iter_image_files([fit_images])] if fit_images is not None else [p for _, p in items]
        if spark_master:
            from labelfree.explainer.spark_job import fit_foreground_with_spark

            labeller.foreground = fit_foreground_with_spark(paths, labeller.model_dir, master=spark_master,
                                                            config=labeller.config)
            return labeller.foreground
        return fit_foreground(labeller, paths)
    except (ValueError, KeyError, json.JSONDecodeError) as exc:
        _fail(f"foreground model: {exc}")


def _category(manifest: dict) -> str:
    for key in ("concept", "positive_label", "query"):
        if isinstance(manifest.get(key), str) and manifest[key]:
            return manifest[key]
    labels = manifest.get("labels")
    if isinstance(labels, list) and labels:
        return str(labels[-1])
    return "object"


__all__ = ["app", "LabelfreeError"]
