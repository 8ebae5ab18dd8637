"""Folder in, DET_DIR out: boxes.json + images -> trained, exported, checked detector.

The one function the CLI and the Celery task both call. DET_DIR receives ``model.onnx`` (the
deployed graph: int8 by default on CPU, see :mod:`quantize`), ``model_fp32.onnx`` (checked
against PyTorch: manifest ``onnx_check_max_abs_diff``), ``manifest.json``, ``metrics.json``,
``triton/labelfree_detector/{config.pbtxt,1/model.onnx}`` and ``checkpoints/`` (resumable
training state).
"""

from __future__ import annotations

import dataclasses
import hashlib
import shutil
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from labelfree.trainer.detector import CALIBRATE, HARD_NEGATIVES, SOFT_CANDIDATES
from labelfree.trainer.detector.calibrate import fit_score_calibration
from labelfree.trainer.detector.data import DetectionDataset, collate, load_coco_boxes, negative_samples
from labelfree.trainer.detector.export import (
    TRITON_NAME,
    build_manifest,
    check_onnx,
    export_onnx,
    write_json,
    write_triton_repository,
)
from labelfree.trainer.detector.model import ExportModel
from labelfree.trainer.detector.quantize import compare_graphs, quantize_detector
from labelfree.trainer.detector.selftrain import RoundGraph, relabel, weigh_negatives
from labelfree.trainer.detector.train import TrainConfig, train_detector
from labelfree.core.version import build_host, code_version


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _stretched(samples: list, size: int):
    """uint8 ``(M, size, size, 3)``: the samples' images as the deployed graph sees them."""
    dataset = DetectionDataset(samples, size, train=False)
    return collate([dataset[i] for i in range(len(dataset))])[0].numpy()


def _calibrate(detector, samples: list, config: TrainConfig, pool_kernel: int) -> dict:
    """``calibrate.fit_score_calibration`` on the held-out split, scored by the uncalibrated graph
    in PyTorch; truths are the teacher's labels (soft candidates, weight < 1, are not)."""
    if not samples:
        return {"fitted": False, "reason": "no held-out images"}
    if not any(s.is_negative for s in samples):
        # Fitted on animals alone, the curve lifts every weak peak: a snow-leopard detector so
        # calibrated boxed 15% of empty scenes at conf >= 0.5 (0% before).
        return {"fitted": False, "reason": "no held-out negatives: the background's scores are unknown"}
    dataset = DetectionDataset(samples, config.input_size, train=False)
    graph = ExportModel(detector.eval(), config.top_k, pool_kernel).eval()
    boxes, scores, truths = [], [], []
    with torch.no_grad():
        for start in range(0, len(dataset), 32):
            chunk = [dataset[i] for i in range(start, min(start + 32, len(dataset)))]
            images, true_boxes, _, true_weights = collate(chunk)
            b, s, _ = graph(images)
            boxes += list(b.numpy())
            scores += list(s.numpy())
            truths += [t[w >= 1.0] for t, w in zip(true_boxes, true_weights)]
    return fit_score_calibration(boxes, scores, truths)


def _score_summary(tops) -> dict:
    """How a round's detector scores the negatives (uncalibrated top score per image)."""
    return {"n": int(len(tops)), "median_top": round(float(np.median(tops)), 4) if len(tops) else None,
            "share_at_0.5": round(float((tops >= 0.5).mean()), 4) if len(tops) else None}


def build_detector(images: str | Path, boxes: str | Path, out: str | Path, *,
                   negatives: Sequence[str | Path] = (), config: TrainConfig | None = None,
                   instance_kind: str = "cpu", pool_kernel: int = 3, min_box_score: float = 0.0,
                   min_relative_score: float = 0.5, soft_candidates: bool = SOFT_CANDIDATES,
                   unboxed_as_negative: bool = False, self_train_rounds: int = 1, relabel_relative: float = 0.5,
                   hard_negatives: float = HARD_NEGATIVES,
                   int8: bool | None = None, calibration_images: int = 256, calibrate: bool = CALIBRATE,
                   resume: bool = True, show_progress: bool = True, provenance: dict | None = None,
                   progress: Callable[[float], None] | None = None) -> dict:
    """Train on ``boxes`` (COCO-style, ``file_name`` relative to ``images``), export to ``out``.

    ``negatives``: extra folders of images without the object. Images listed in ``boxes`` without
    any box are skipped unless ``unboxed_as_negative``: a teacher that found nothing on a search
    result is weak evidence of absence, and training them as background would teach the detector
    to miss exactly the hard cases. Boxes under ``min_relative_score`` x their image's top box are
    left out (the explainer's ranked candidates, see ``labeller.CANDIDATE_WEIGHT``), or with
    ``soft_candidates`` kept as soft targets whose centres are taught their relative score
    (``loss.focal_heat_loss``), as are the detector's own weaker peaks in self-training rounds.
    ``self_train_rounds``: times to relabel the positives with the detector and train again (see
    :mod:`selftrain`), keeping its peaks scoring at least ``relabel_relative`` x the image's top
    score; checkpoints of round r go to ``checkpoints/round<r>``. ``hard_negatives``: in those rounds a
    negative is drawn ``1 + hard_negatives x`` the last round's top score on it times as often
    (``selftrain.weigh_negatives``; 0: uniform). ``calibrate``: Platt-scale the
    exported scores on the held-out split against the teacher's boxes (:mod:`calibrate`).
    ``instance_kind``: ``cpu`` or ``gpu`` for the Triton instance group. ``provenance`` (ids of the
    boxes, images, classifier and explainer run) is stored in the manifest. Returns the manifest.
    """
    config = config or TrainConfig()
    images, boxes, out = Path(images), Path(boxes), Path(out)
    if not images.is_dir():
        raise ValueError(f"--images {images} is not a directory")
    if not boxes.is_file():
        raise ValueError(f"--boxes {boxes} is not a file")
    samples, labels, category_ids = load_coco_boxes(boxes, images, min_score=min_box_score,
                                                     min_relative_score=min_relative_score, soft=soft_candidates)
    positives = [s for s in samples if not s.is_negative]
    extra_negatives = negative_samples(negatives) if negatives else []
    unboxed = [s for s in samples if s.is_negative]
    all_negatives = (unboxed if unboxed_as_negative else []) + extra_negatives
    out.mkdir(parents=True, exist_ok=True)

    if self_train_rounds < 0:
        raise ValueError(f"self_train_rounds must be >= 0, got {self_train_rounds}")
    if hard_negatives < 0:
        raise ValueError(f"hard_negatives must be >= 0, got {hard_negatives}")
    rounds = self_train_rounds + 1
    result, train_positives, train_negatives, negative_scores = None, positives, all_negatives, []
    for r in range(rounds):
        work = out if r == 0 else out / "checkpoints" / f"round{r}"
        if r:
            graph = RoundGraph(result.detector, work, input_size=config.input_size, top_k=config.top_k,
                               threads=config.threads)
            train_positives = relabel(graph, positives, relative=relabel_relative, soft=soft_candidates)
            if hard_negatives and all_negatives:
                train_negatives, tops = weigh_negatives(graph, all_negatives, hard_negatives)
                negative_scores.append(_score_summary(tops))
        report = (lambda share, r=r: progress(0.9 * (r + share) / rounds)) if progress else None
        result = train_detector(train_positives, train_negatives, len(labels), work, config, resume=resume,
                                show_progress=show_progress, progress=report)
    val_files = set(result.val_files)
    held_out = [s for s in positives + all_negatives if str(s.path) in val_files]
    score_calibration = (_calibrate(result.detector, held_out, config, pool_kernel) if calibrate
                         else {"fitted": False, "reason": "turned off"})
    affine = ((score_calibration["scale"], score_calibration["bias"]) if score_calibration["fitted"]
              else (1.0, 0.0))
    fp32_path = export_onnx(result.detector, out / "model_fp32.onnx", input_size=config.input_size,
                            top_k=config.top_k, pool_kernel=pool_kernel, score_affine=affine)
    check_samples = [s for s in positives[:4]] + all_negatives[:1]
    check_images = _stretched(check_samples, config.input_size)
    diff = check_onnx(result.detector, fp32_path, check_images, top_k=config.top_k, pool_kernel=pool_kernel,
                      score_affine=affine)
    onnx_path = out / "model.onnx"
    precision: dict = {"precision": "fp32"}
    if int8 is None:
        int8 = instance_kind == "cpu"
    if int8:
        # Calibrate on the images the network was trained on, spread over the whole set.
        step = max(1, len(positives) // max(calibration_images, 1))
        calibration = _stretched(positives[::step][:calibration_images], config.input_size)
        precision = {"precision": "int8",
                     "quantization": quantize_detector(fp32_path, onnx_path, calibration),
                     "int8_vs_fp32": compare_graphs(fp32_path, onnx_path, check_images, threads=config.threads)}
    else:
        shutil.copyfile(fp32_path, onnx_path)
    triton_dir = write_triton_repository(onnx_path, out / "triton", input_size=config.input_size,
                                         top_k=config.top_k, instance_kind=instance_kind,
                                         max_batch_size=max(config.batch_size, 32))
    positive_paths = {str(s.path) for s in positives}
    # the held-out positives by their boxes-file name, so a report can show the detector on photos it never saw
    val_positives = sorted(Path(p).relative_to(images).as_posix() for p in result.val_files if p in positive_paths)
    metrics = {"validation": result.metrics, "history": result.history,
               "note": "validation is against held-out pseudo-boxes (the teacher), not human boxes"}
    training = {
        "images": str(images.resolve()), "boxes": str(boxes.resolve()), "boxes_sha256": _sha256(boxes),
        "negatives": [str(Path(n).resolve()) for n in negatives],
        "n_positive": len(positives), "n_negative": len(all_negatives), "self_train_rounds": self_train_rounds,
        "relabel_relative": relabel_relative, "min_relative_score": min_relative_score,
        "hard_negatives": hard_negatives, "negative_scores_by_round": negative_scores,
        "soft_candidates": soft_candidates, "score_calibration": score_calibration,
        "n_boxes_teacher": int(sum(len(p.boxes) for p in positives)),
        "n_boxes_last_round": int(sum(len(p.boxes) for p in train_positives)),
        "n_unboxed": len(unboxed), "unboxed_as_negative": unboxed_as_negative,
        "n_train": len(result.train_files), "n_val": len(result.val_files), "val_positives": val_positives,
        "config": dataclasses.asdict(config), "provenance": provenance or {},
        "host": build_host(),  # after training, so torch_threads is the count it trained with
    }
    manifest = build_manifest(
        result.detector, input_size=config.input_size, top_k=config.top_k, pool_kernel=pool_kernel,
        labels=labels, category_ids=category_ids, training=training, metrics=result.metrics,
        onnx_check_max_abs_diff=diff, code_version=code_version(),
        triton={"name": TRITON_NAME, "repository": "triton", "instance_kind": instance_kind}, precision=precision)
    write_json(out / "manifest.json", manifest)
    write_json(out / "metrics.json", metrics)
    if progress:
        progress(1.0)
    return manifest

