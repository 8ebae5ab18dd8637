"""Train the detector on (pseudo-)boxes: pure function, arguments only, no settings.

What trains: the neck, the head and the backbone's last stage (``backbone_mode`` ``top``, the
default on CPU and CUDA alike); the earlier stages keep their pretrained weights. A ``frozen``
backbone trains about twice as fast on CPU (ONNX Runtime computes its feature pyramid) but
localises worse; ``all`` trains end to end, which measured no better on a GPU. CUDA trains
with mixed precision.

Each epoch ends with validation on held-out images (their pseudo-boxes) and a checkpoint
(``checkpoints/last.pt``); calling again with ``resume=True`` continues from it.
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from tqdm import tqdm

from labelfree.core.backbone import load_backbone
from labelfree.trainer.detector import (BACKBONE_MODE, EMA, EPOCHS, GROUP_REPEAT, KEEP, KEEP_CHOICES, MIN_STEPS,
                                        NEG_FRACTION, PASTE, PASTE_COVER, PASTE_MAX)
from labelfree.trainer.detector.boxops import match_ap, top_box_iou
from labelfree.trainer.detector.data import DetectionDataset, Sample, collate, epoch_order, negatives_per_epoch
from labelfree.trainer.detector.loss import build_targets, detection_loss
from labelfree.trainer.detector.model import Detector, PyramidModel, decode, top_stage

BACKBONE_MODES = ("frozen", "top", "all")
CPU_CHANNELS_LAST = True  # train in NHWC on CPU (see train_detector); False only for A/B timing


@dataclass
class TrainConfig:
    """Hyper-parameters. ``backbone_mode``: ``frozen`` | ``top`` (last stage trains) | ``all``;
    ``auto`` is the measured default (``BACKBONE_MODE``, or ``frozen`` for a backbone without a top
    stage). ``device`` ``auto`` picks CUDA when present; ``feature_runtime`` ``auto`` runs the frozen
    stages in ONNX Runtime on CPU. ``mosaic``: share of training views that are 2x2 mosaics
    (:class:`~labelfree.trainer.detector.data.DetectionDataset`)."""

    input_size: int = 128
    epochs: int = EPOCHS
    batch_size: int = 16
    lr: float = 3e-3
    backbone_lr_scale: float = 0.1
    weight_decay: float = 1e-4
    width: int = 32
    head_depth: int = 2
    out_stride: int = 8
    backbone: str = "efficientnet-lite0"
    backbone_mode: str = "auto"
    neg_fraction: float = NEG_FRACTION
    val_fraction: float = 0.1
    max_val: int = 200
    top_k: int = 100
    device: str = "auto"
    amp: bool = True
    feature_runtime: str = "auto"
    num_workers: int = 0
    threads: int | None = None
    seed: int = 0
    max_steps: int | None = None
    # Small datasets get more epochs, until they train at least this many optimiser steps (``MIN_STEPS``).
    min_steps: int = MIN_STEPS
    augment: bool = True
    mosaic: float = 0.0
    paste: float = PASTE
    paste_cover: float = PASTE_COVER
    paste_max: int = PASTE_MAX  # animals pasted into one view at most (each after the first with even odds)
    # Times per epoch a training photo with two or more full-weight boxes (a group the labels split) is seen.
    group_repeat: int = GROUP_REPEAT
    # Exponential moving average of the weights (decay per step; 0: off): validation, checkpoints and the
    # returned detector use the average.
    ema: float = EMA
    # The weights a round returns: "last" (the end of the schedule, averaged when ``ema`` is on) or "best"
    # (the epoch that agreed best with the held-out pseudo-boxes). ``KEEP`` says why "last".
    keep: str = KEEP

    def validate(self) -> None:
        if self.input_size % 32 or self.input_size < 64:
            raise ValueError(f"input_size must be a multiple of 32 and >= 64, got {self.input_size}")
        if self.backbone_mode not in BACKBONE_MODES + ("auto",):
            raise ValueError(f"backbone_mode {self.backbone_mode!r} not in {BACKBONE_MODES + ('auto',)}")
        if self.feature_runtime not in ("auto", "torch", "onnxruntime"):
            raise ValueError(f"feature_runtime {self.feature_runtime!r} not in auto/torch/onnxruntime")
        if self.min_steps < 0:
            raise ValueError(f"min_steps must be >= 0, got {self.min_steps}")
        if self.epochs < 1 or self.batch_size < 1:
            raise ValueError(f"epochs and batch_size must be >= 1, got {self.epochs}, {self.batch_size}")
        cells = (self.input_size // self.out_stride) ** 2
        if self.top_k > cells:
            raise ValueError(f"top_k={self.top_k} is more than the {cells} cells of a {self.input_size}px input "
                             f"at stride {self.out_stride}; lower top_k or raise input_size")
        if self.keep not in KEEP_CHOICES:
            raise ValueError(f"keep must be one of {KEEP_CHOICES}, got {self.keep!r}")
        if self.paste_max < 1:
            raise ValueError(f"paste_max must be >= 1, got {self.paste_max}")
        if self.group_repeat < 1:
            raise ValueError(f"group_repeat must be >= 1, got {self.group_repeat}")
        if not 0.0 <= self.ema < 1.0:
            raise ValueError(f"ema must be in [0, 1), got {self.ema}")
        if not 0.0 <= self.val_fraction < 1.0:
            raise ValueError(f"val_fraction must be in [0, 1), got {self.val_fraction}")


@dataclass
class TrainResult:
    detector: Detector
    config: TrainConfig
    history: list[dict] = field(default_factory=list)
    metrics: dict = field(default_factory=dict)
    train_files: list[str] = field(default_factory=list)
    val_files: list[str] = field(default_factory=list)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


class _Features:
    """``[C3, C4, C5]`` for a uint8 batch: on CPU the frozen stages run in ONNX Runtime (several times
    faster than eager PyTorch), and with ``top`` the last stage, which trains, in PyTorch on their C4."""

    def __init__(self, detector: Detector, size: int, device: torch.device, use_ort: bool, work_dir: Path,
                 threads: int, mode: str = "frozen"):
        self.detector, self.device, self.session = detector, device, None
        self.top = top_stage(detector.backbone) if mode == "top" else None
        if use_ort:
            import onnxruntime as ort

            below_top = self.top is not None
            path = work_dir / f"backbone_pyramid_{size}{'_below_top' if below_top else ''}.onnx"
            if not path.is_file():
                example = torch.zeros(1, size, size, 3, dtype=torch.uint8)
                names = ["c3", "c4"] if below_top else ["c3", "c4", "c5"]
                torch.onnx.export(PyramidModel(detector.backbone, below_top=below_top).eval(), (example,), str(path),
                                  input_names=["images"], output_names=names,
                                  dynamic_axes={"images": {0: "n"}}, opset_version=17, dynamo=False)
            options = ort.SessionOptions()
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
            self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    def __call__(self, images: torch.Tensor) -> list[torch.Tensor]:
        from labelfree.core.backbone import preprocess_uint8

        if self.session is not None:
            feats = [torch.from_numpy(f) for f in self.session.run(None, {"images": images.numpy()})]
            if self.top is not None:
                x = feats[-1]
                for block in self.top:
                    x = block(x)
                feats.append(x)
            return feats
        return self.detector.backbone.pyramid(preprocess_uint8(images.to(self.device, non_blocking=True)))


def _set_trainable(detector: Detector, mode: str) -> list[dict]:
    """Freeze per ``mode``; return optimizer parameter groups (backbone at a lower rate)."""
    detector.backbone.requires_grad_(mode == "all")
    backbone_params: list = []
    if mode == "top":
        # The last stride-32 stage: the most task-specific features, cheapest to adapt.
        blocks = top_stage(detector.backbone)
        if blocks is None:
            raise ValueError(f"backbone_mode 'top' is not supported for {detector.backbone.name}")
        for block in blocks:
            block.requires_grad_(True)
            backbone_params += list(block.parameters())
    elif mode == "all":
        backbone_params = list(detector.backbone.parameters())
    groups = [{"params": detector.head_parameters(), "lr_scale": 1.0}]
    if backbone_params:
        groups.append({"params": backbone_params, "lr_scale": None})
    return groups


def _train_mode(detector: Detector, mode: str) -> None:
    detector.train()
    if mode != "all":
        # Keep the pretrained BN statistics: small CPU batches would only corrupt them.
        detector.backbone.eval()


@torch.no_grad()
def predict_batches(detector: Detector, features: _Features, loader, top_k: int,
                    device: torch.device) -> tuple[list, list, list, list, float]:
    """Decoded top-K per image (normalised xyxy, scores), truths, and mean validation loss."""
    detector.eval()
    boxes, scores, truths, labels, losses = [], [], [], [], []
    for images, true_boxes, true_labels, true_weights in loader:
        heat, ltrb = detector.forward_pyramid([f.to(device) for f in features(images)])
        h, w = heat.shape[-2:]
        targets = build_targets(true_boxes, true_labels, detector.num_classes, h, w, true_weights).to(device)
        losses.append(float(detection_loss(heat, ltrb, targets)[0]))
        b, s, _ = decode(heat, ltrb, top_k)
        boxes += list(b.cpu().numpy())
        scores += list(s.cpu().numpy())
        # soft candidates are ranked below the labels, not labels: the agreement is with the labels
        truths += [b[w >= 1.0] for b, w in zip(true_boxes, true_weights)]
        labels += [lab[w >= 1.0] for lab, w in zip(true_labels, true_weights)]
    return boxes, scores, truths, labels, float(np.mean(losses)) if losses else float("nan")


def localisation_metrics(boxes: list, scores: list, truths: list) -> dict[str, float]:
    """AP@0.5, CorLoc and mean top-box IoU of predictions against (pseudo-)truths, positives only."""
    keep = [i for i, t in enumerate(truths) if len(t)]
    ious = top_box_iou([boxes[i] for i in keep], [scores[i] for i in keep], [truths[i] for i in keep])
    return {"ap50": match_ap(boxes, scores, truths), "corloc": float((ious >= 0.5).mean()) if keep else 0.0,
            "miou": float(ious.mean()) if keep else 0.0}


@torch.no_grad()
def _ema_update(ema: dict, detector: Detector, decay: float) -> None:
    for key, value in detector.state_dict().items():
        if value.dtype.is_floating_point:
            ema[key].mul_(decay).add_(value.detach(), alpha=1 - decay)
        else:
            ema[key].copy_(value)


def _selection_score(record: dict) -> float:
    """Checkpoint choice: agreement with held-out pseudo-boxes (AP@0.5 and mean IoU, since AP
    saturates on easy data); the training loss when there is no validation split."""
    if "val_ap50" in record:
        return record["val_ap50"] + record["val_miou"]
    return -record["train_loss"]


def _warmup_share(total_steps: int) -> float:
    """OneCycleLR's ``pct_start``: a tenth of the steps warm up. torch divides by zero when the warm-up ends
    on step 1 exactly (``pct_start * total_steps == 1``: ten steps in all), so such a schedule gets a
    little more warm-up instead."""
    return 0.1 if 0.1 * total_steps != 1.0 else 0.15


def _split(samples: list[Sample], fraction: float, limit: int, rng: np.random.Generator):
    if fraction <= 0 or len(samples) < 5:
        return samples, []
    order = rng.permutation(len(samples))
    n_val = min(limit, max(1, int(round(len(samples) * fraction))))
    return [samples[i] for i in order[n_val:]], [samples[i] for i in order[:n_val]]


def train_detector(positives: list[Sample], negatives: list[Sample], num_classes: int, work_dir: str | Path,
                   config: TrainConfig | None = None, *, resume: bool = True, show_progress: bool = True,
                   progress: Callable[[float], None] | None = None) -> TrainResult:
    """Train on ``positives`` (samples with boxes) and ``negatives`` (images without); see module doc.

    ``work_dir`` receives ``checkpoints/last.pt`` (the live weights, and the average under ``ema``) and,
    with ``keep="best"``, ``checkpoints/best.pt`` (best validation AP@0.5 + mean IoU against held-out
    pseudo-boxes). The returned detector carries the weights ``config.keep`` names: the last (averaged)
    ones by default, or the best.
    ``progress`` gets the finished share of training in [0, 1] after each epoch.
    """
    config = config or TrainConfig()
    config.validate()
    if not positives:
        raise ValueError("no images with boxes to train on")
    device = resolve_device(config.device)
    mode = config.backbone_mode if config.backbone_mode != "auto" else BACKBONE_MODE
    threads = config.threads or torch.get_num_threads()
    torch.set_num_threads(threads)
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    work = Path(work_dir)
    (work / "checkpoints").mkdir(parents=True, exist_ok=True)

    train_pos, val_pos = _split(positives, config.val_fraction, config.max_val, rng)
    train_neg, val_neg = _split(negatives, config.val_fraction, config.max_val // 4, rng)
    train_samples = train_pos + train_neg
    detector = Detector(load_backbone(config.backbone), num_classes, width=config.width,
                        head_depth=config.head_depth, out_stride=config.out_stride).to(device)
    if config.backbone_mode == "auto" and mode == "top" and top_stage(detector.backbone) is None:
        mode = "frozen"  # a backbone without numbered blocks (MobileNetV2) has no top stage to train
    if device.type == "cpu" and CPU_CHANNELS_LAST:
        # NHWC: PyTorch's CPU kernels run the top stage's depthwise convolutions faster in it (forward +
        # backward at batch 16: 110-130 -> 81-83 ms; +15-17% photos/s in isolated runs, not visible end to end
        # in pipeline run 18). bench/results/detector.md, "Seventh session", "Channels-last training on CPU".
        detector.to(memory_format=torch.channels_last)
    groups = _set_trainable(detector, mode)
    for g in groups:
        g["lr"] = config.lr * (g["lr_scale"] or config.backbone_lr_scale)
    optimizer = torch.optim.AdamW(groups, weight_decay=config.weight_decay)
    use_ort = config.feature_runtime == "onnxruntime" or (
        config.feature_runtime == "auto" and mode in ("frozen", "top") and device.type == "cpu")
    if use_ort and mode not in ("frozen", "top"):
        raise ValueError("feature_runtime 'onnxruntime' needs backbone_mode 'frozen' or 'top'")
    features = _Features(detector, config.input_size, device, use_ort, work / "checkpoints", threads, mode)
    amp = config.amp and device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=amp)

    train_set = DetectionDataset(train_samples, config.input_size, train=config.augment, seed=config.seed,
                                 mosaic=config.mosaic, paste=config.paste,
                                 paste_cover=config.paste_cover, paste_max=config.paste_max)
    val_set = DetectionDataset(val_pos + val_neg, config.input_size, train=False)
    groups_split = [i for i, s in enumerate(train_pos) if int((s.weights >= 1.0).sum()) >= 2]
    extra = np.repeat(np.asarray(groups_split, dtype=np.int64), config.group_repeat - 1)
    n_pos_used = len(train_pos) + len(extra)
    n_neg_used = negatives_per_epoch(n_pos_used, len(train_neg), config.neg_fraction)
    steps_per_epoch = max(1, (n_pos_used + n_neg_used) // config.batch_size)
    epochs = max(config.epochs, -(-config.min_steps // steps_per_epoch))
    total_steps = config.max_steps or steps_per_epoch * epochs
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=[g["lr"] for g in groups], total_steps=max(total_steps, 1),
        pct_start=_warmup_share(max(total_steps, 1)))

    start_epoch, step, history, best = 0, 0, [], float("-inf")  # a selection score may be negative (-loss)
    ema = {k: v.detach().clone() for k, v in detector.state_dict().items()} if config.ema else None
    last_path, best_path = work / "checkpoints" / "last.pt", work / "checkpoints" / "best.pt"
    if resume and last_path.is_file():
        state = torch.load(last_path, map_location=device, weights_only=False)
        if state["config"] != dataclasses.asdict(config):
            raise ValueError(f"{last_path} was written with a different config; delete it or pass resume=False")
        detector.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        start_epoch, step, history, best = state["epoch"] + 1, state["step"], state["history"], state["best"]
        ema = state.get("ema")

    for epoch in range(start_epoch, epochs):
        if step >= total_steps:
            break
        train_set.set_epoch(epoch)
        order = epoch_order(len(train_pos), len(train_neg), config.neg_fraction if train_neg else 0.0,
                            np.random.default_rng([config.seed, epoch]), extra, [s.draw for s in train_neg])
        loader = torch.utils.data.DataLoader(
            torch.utils.data.Subset(train_set, order.tolist()), batch_size=config.batch_size, shuffle=False,
            collate_fn=collate, num_workers=config.num_workers, pin_memory=device.type == "cuda",
            drop_last=len(order) > config.batch_size)
        _train_mode(detector, mode)
        started, seen, sums = time.perf_counter(), 0, {"loss": 0.0, "heat": 0.0, "giou": 0.0}
        bar = tqdm(loader, desc=f"epoch {epoch + 1}/{epochs}", disable=not show_progress, leave=False)
        for images, boxes, labels, weights in bar:
            with torch.autocast(device.type, dtype=torch.float16, enabled=amp):
                if mode == "frozen":
                    with torch.no_grad():
                        feats = [f.to(device, non_blocking=True) for f in features(images)]
                    heat, ltrb = detector.forward_pyramid(feats)
                else:
                    heat, ltrb = detector.forward_pyramid(features(images))
                targets = build_targets(boxes, labels, num_classes, *heat.shape[-2:], weights).to(device)
                loss, parts = detection_loss(heat, ltrb, targets)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
            step += 1
            if ema is not None:
                _ema_update(ema, detector, min(config.ema, (1 + step) / (10 + step)))
            seen += len(images)
            sums["loss"] += float(loss.detach())
            sums["heat"] += parts["heat"]
            sums["giou"] += parts["giou"]
            bar.set_postfix(loss=f"{float(loss.detach()):.3f}")
            if step >= total_steps:
                break
        elapsed = time.perf_counter() - started
        n_batches = max(1, -(-seen // config.batch_size))
        record = {"epoch": epoch + 1, "step": step, "images_per_s": seen / max(elapsed, 1e-9), "threads": threads,
                  **{f"train_{k}": v / n_batches for k, v in sums.items()}}
        live = None
        if ema is not None:  # validate and keep the average; train on from the live weights
            live = {k: v.detach().clone() for k, v in detector.state_dict().items()}
            detector.load_state_dict(ema)
        if len(val_set):
            val_loader = torch.utils.data.DataLoader(val_set, batch_size=config.batch_size, collate_fn=collate,
                                                     num_workers=config.num_workers)
            b, s, t, _, val_loss = predict_batches(detector, features, val_loader, config.top_k, device)
            record.update({"val_loss": val_loss, **{f"val_{k}": v for k, v in localisation_metrics(b, s, t).items()}})
        history.append(record)
        score = _selection_score(record)
        if score > best:
            best = score
            if config.keep == "best":  # a full state dict a time: written only when it will be returned
                torch.save({"model": detector.state_dict(), "epoch": epoch, "record": record}, best_path)
        torch.save({"model": live or detector.state_dict(), "ema": ema, "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict(), "epoch": epoch,
                    "step": step, "history": history, "best": best, "config": dataclasses.asdict(config)}, last_path)
        if live is not None:
            detector.load_state_dict(live)
        if show_progress:
            tqdm.write(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in record.items()}))
        if progress is not None:
            progress(min(1.0, (epoch + 1) / epochs))

    if config.keep == "best" and best_path.is_file():
        detector.load_state_dict(torch.load(best_path, map_location=device, weights_only=False)["model"])
        kept = max(history, key=_selection_score) if history else {}
    else:
        if ema is not None:
            detector.load_state_dict(ema)
        kept = history[-1] if history else {}
    detector.eval()
    detector.to(memory_format=torch.contiguous_format)
    return TrainResult(detector.cpu(), config, history, dict(kept),
                       [str(s.path) for s in train_samples], [str(s.path) for s in val_pos + val_neg])
