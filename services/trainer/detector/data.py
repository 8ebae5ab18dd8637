"""Detector training data: COCO-style pseudo-boxes, negatives, augmentation, batches.

A :class:`Sample` holds ``boxes`` ``(M, 4)`` float32 xyxy in PIXELS of the decoded image
(EXIF-oriented, as :func:`labelfree.core.images.load_rgb` gives it), ``labels`` ``(M,)``
int64 class indices and ``weights`` ``(M,)`` float32 in ``(0, 1]``, the heat each box's centre
is taught to reach (1 for a label, below 1 for a ranked candidate); a negative has ``M = 0``. Batches hold uint8 ``(S, S, 3)`` images
stretched to ``S x S`` (the deployed model's input) and boxes normalised xyxy in ``[0, 1]``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import torch
from PIL import Image

from labelfree.core.images import detector_resize, iter_image_files, load_rgb
from labelfree.trainer.detector import PASTE_COVER
from labelfree.trainer.detector.boxops import box_area

# Fill for zoomed-out borders: the ImageNet mean colour, which the backbone sees as "nothing".
FILL_RGB = (124, 116, 104)


@dataclass
class Sample:
    path: Path
    boxes: np.ndarray = field(default_factory=lambda: np.zeros((0, 4), np.float32))
    labels: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    weights: np.ndarray | None = None  # None: every box weighs 1
    # A negative's relative chance of being drawn into an epoch (``epoch_order``); hard ones weigh more.
    draw: float = 1.0

    def __post_init__(self) -> None:
        if self.weights is None:
            self.weights = np.ones(len(self.boxes), np.float32)
        if not self.draw > 0:
            raise ValueError(f"{self.path}: draw must be > 0, got {self.draw}")
        if len(self.weights) != len(self.boxes) or len(self.labels) != len(self.boxes):
            raise ValueError(f"{self.path}: {len(self.boxes)} boxes, {len(self.labels)} labels, "
                             f"{len(self.weights)} weights")

    @property
    def is_negative(self) -> bool:
        return len(self.boxes) == 0


def load_coco_boxes(boxes_json: str | Path, images_root: str | Path, *,
                    min_score: float = 0.0,
                    min_relative_score: float = 0.0,
                    soft: bool = False) -> tuple[list[Sample], list[str], list[int]]:
    """Read COCO-style boxes (``bbox`` = ``[x, y, w, h]`` pixels, ``file_name`` relative to ``images_root``).

    Returns (samples, class names, COCO category ids), classes in the order of ``categories``.
    An image listed without annotations (or whose boxes all fall below ``min_score``) is a
    negative. ``min_relative_score``: a box scoring under this share of its image's top box is
    left out (the explainer's candidate boxes, ranked below half the weakest region box); with
    ``soft`` it is kept as a soft target instead, weighted by its score over the top box's, so
    the detector learns to rank it as the teacher does. Boxes at or above the share weigh 1.
    Raises ValueError naming a missing file, unknown image id or category.
    """
    root = Path(images_root)
    data = json.loads(Path(boxes_json).read_text())
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise ValueError(f"{boxes_json}: not COCO-style boxes (no 'images' list)")
    categories = data.get("categories") or [{"id": 1, "name": "object"}]
    cat_ids = [int(c["id"]) for c in categories]
    index_of = {cid: i for i, cid in enumerate(cat_ids)}
    per_image: dict[int, list] = {}
    for im in data["images"]:
        per_image[int(im["id"])] = []
    for ann in data.get("annotations", []):
        image_id = int(ann["image_id"])
        if image_id not in per_image:
            raise ValueError(f"{boxes_json}: annotation refers to unknown image_id {image_id}")
        category = int(ann.get("category_id", cat_ids[0]))
        if category not in index_of:
            raise ValueError(f"{boxes_json}: unknown category_id {category}")
        if float(ann.get("score", 1.0)) < min_score:
            continue
        x, y, w, h = (float(v) for v in ann["bbox"])
        if w > 0 and h > 0:
            per_image[image_id].append((x, y, x + w, y + h, index_of[category], float(ann.get("score", 1.0))))
    weights: dict[int, list[float]] = {}
    for image_id, rows in per_image.items():
        top = max((row[5] for row in rows), default=1.0)
        relative = [row[5] / top if top > 0 else 1.0 for row in rows]
        if soft:
            weights[image_id] = [1.0 if r >= min_relative_score else r for r in relative]
        else:
            keep = [r >= min_relative_score for r in relative]
            per_image[image_id] = [row for row, k in zip(rows, keep) if k]
            weights[image_id] = [1.0] * len(per_image[image_id])
    samples = []
    for im in data["images"]:
        path = root / im["file_name"]
        if not path.is_file():
            raise ValueError(f"{boxes_json}: image {im['file_name']!r} is not under {root}")
        rows = np.array(per_image[int(im["id"])], np.float64).reshape(-1, 6)
        samples.append(Sample(path, rows[:, :4].astype(np.float32), rows[:, 4].astype(np.int64),
                              np.array(weights[int(im["id"])], np.float32)))
    return samples, [str(c.get("name", c["id"])) for c in categories], cat_ids


def negative_samples(roots: Iterable[str | Path]) -> list[Sample]:
    """Every image under ``roots`` as a negative (no boxes)."""
    return [Sample(path) for path in iter_image_files(roots)]


def stretch_resize(image: np.ndarray, size: int) -> np.ndarray:
    """``(H, W, 3)`` uint8 -> ``(size, size, 3)`` uint8, stretched (the deployed model's input)."""
    return np.array(detector_resize(Image.fromarray(image), size))


def _crop_window(width: float, height: float, keep: np.ndarray | None, rng: np.random.Generator,
                 min_side: float) -> tuple[float, float, float, float]:
    """A random window containing ``keep`` (xyxy union of the boxes) with sides >= ``min_side`` of the image."""
    if keep is None:
        cw, ch = rng.uniform(min_side, 1.0) * width, rng.uniform(min_side, 1.0) * height
        x0, y0 = rng.uniform(0, width - cw), rng.uniform(0, height - ch)
        return x0, y0, x0 + cw, y0 + ch
    kx0, ky0, kx1, ky1 = keep
    x0 = rng.uniform(0, max(kx0, 0.0))
    y0 = rng.uniform(0, max(ky0, 0.0))
    x1 = rng.uniform(min(kx1, width), width)
    y1 = rng.uniform(min(ky1, height), height)
    # Grow a window that came out too small back towards the full image.
    if x1 - x0 < min_side * width:
        x0, x1 = 0.0, width
    if y1 - y0 < min_side * height:
        y0, y1 = 0.0, height
    return x0, y0, x1, y1


def augment(image: np.ndarray, boxes: np.ndarray, size: int, rng: np.random.Generator, *,
            flip_p: float = 0.5, zoom_out_p: float = 0.3, max_zoom_out: float = 1.6, crop_p: float = 0.5,
            min_crop_side: float = 0.4, jitter: float = 0.2) -> tuple[np.ndarray, np.ndarray]:
    """Random view of one image: zoom-out (scale jitter), box-keeping crop, flip, brightness/contrast.

    ``image`` ``(H, W, 3)`` uint8; ``boxes`` ``(M, 4)`` xyxy pixels. Returns the ``(size, size, 3)``
    uint8 view and ``(M, 4)`` boxes normalised xyxy; every box stays whole (crops contain them all).
    """
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"image must be (H, W, 3), got {image.shape}")
    h, w = image.shape[:2]
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4).copy()
    pil = Image.fromarray(image)
    if rng.random() < zoom_out_p:
        # Paste onto a larger canvas: objects get smaller, as in wider camera-trap shots.
        z = rng.uniform(1.0, max_zoom_out)
        cw, ch = int(round(w * z)), int(round(h * z))
        ox, oy = int(rng.integers(0, cw - w + 1)), int(rng.integers(0, ch - h + 1))
        canvas = Image.new("RGB", (cw, ch), FILL_RGB)
        canvas.paste(pil, (ox, oy))
        pil, w, h = canvas, cw, ch
        boxes += [ox, oy, ox, oy]
    window = (0.0, 0.0, float(w), float(h))
    if rng.random() < crop_p:
        keep = (boxes[:, 0].min(), boxes[:, 1].min(), boxes[:, 2].max(), boxes[:, 3].max()) if len(boxes) else None
        window = _crop_window(w, h, None if keep is None else np.array(keep), rng, min_crop_side)
    x0, y0, x1, y1 = window
    out = np.asarray(detector_resize(pil, size, box=window))
    norm = (boxes - [x0, y0, x0, y0]) / [x1 - x0, y1 - y0, x1 - x0, y1 - y0]
    norm = np.clip(norm, 0.0, 1.0)
    if rng.random() < flip_p:
        out = out[:, ::-1]
        norm = np.stack([1 - norm[:, 2], norm[:, 1], 1 - norm[:, 0], norm[:, 3]], axis=1)
    if jitter > 0:
        gain = rng.uniform(1 - jitter, 1 + jitter)
        bias = rng.uniform(-jitter, jitter) * 64
        mean = out.mean()
        out = np.clip((out.astype(np.float32) - mean) * gain + mean + bias, 0, 255).astype(np.uint8)
    return np.ascontiguousarray(out), norm.astype(np.float32).reshape(-1, 4)


def mosaic(tiles: list[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    """Four ``(s, s, 3)`` uint8 views with normalised xyxy boxes -> one ``(2s, 2s, 3)`` view.

    Tiles go row-major (top-left, top-right, bottom-left, bottom-right); boxes are mapped into
    their quadrant, still normalised to the whole canvas. Returns (canvas, ``(M, 4)`` boxes).
    """
    if len(tiles) != 4:
        raise ValueError(f"mosaic needs 4 tiles, got {len(tiles)}")
    s = tiles[0][0].shape[0]
    if any(t[0].shape != (s, s, 3) for t in tiles):
        raise ValueError(f"mosaic tiles must all be ({s}, {s}, 3), got {[t[0].shape for t in tiles]}")
    canvas = np.empty((2 * s, 2 * s, 3), np.uint8)
    boxes = []
    for k, (view, norm) in enumerate(tiles):
        row, col = divmod(k, 2)
        canvas[row * s:(row + 1) * s, col * s:(col + 1) * s] = view
        boxes.append((np.asarray(norm, np.float32).reshape(-1, 4) + [col, row, col, row]) / 2.0)
    return canvas, np.concatenate(boxes).astype(np.float32)


def _paste_alpha(h: int, w: int) -> np.ndarray:
    """``(h, w, 1)`` float32 matte for a pasted box: a squircle (|x|^4 + |y|^4 <= 1) with feathered
    edges. It keeps a box's corners (legs, ears) better than an ellipse and leaves no hard seam."""
    yy = (np.arange(h, dtype=np.float32) + 0.5) / h * 2 - 1
    xx = (np.arange(w, dtype=np.float32) + 0.5) / w * 2 - 1
    r = (xx[None, :] ** 4 + yy[:, None] ** 4) ** 0.25
    return np.clip((1.0 - r) / 0.15, 0.0, 1.0)[..., None]


def paste_instance(view: np.ndarray, boxes: np.ndarray, donor: np.ndarray, donor_box: np.ndarray,
                   rng: np.random.Generator, *, max_cover: float = PASTE_COVER,
                   tries: int = 10) -> tuple[np.ndarray, np.ndarray] | None:
    """Copy-paste: one more animal, cut from ``donor`` at ``donor_box`` (xyxy pixels), blended into
    ``view`` (``(S, S, 3)`` uint8 with ``boxes`` normalised xyxy) beside the animals already there.

    The pasted animal gets a size like theirs (0.6-1.1 x the largest box's height; a third to
    two thirds of the view in an empty one) and covers at most ``max_cover`` of any box already
    there, so every labelled animal stays mostly visible, as in real group photos. Returns the new
    (view, boxes), or None when no placement fits in ``tries``.
    """
    s = view.shape[0]
    x0, y0, x1, y1 = [int(round(v)) for v in donor_box]
    crop = donor[max(y0, 0):max(y1, y0 + 1), max(x0, 0):max(x1, x0 + 1)]
    if crop.shape[0] < 4 or crop.shape[1] < 4:
        return None
    aspect = crop.shape[1] / crop.shape[0]
    ref = float((boxes[:, 3] - boxes[:, 1]).max()) if len(boxes) else rng.uniform(1 / 3, 2 / 3)
    for _ in range(tries):
        ph = ref * rng.uniform(0.6, 1.1) if len(boxes) else ref
        pw = ph * aspect
        if pw > 0.9 or ph > 0.9:
            shrink = 0.9 / max(pw, ph)
            pw, ph = pw * shrink, ph * shrink
        px, py = rng.uniform(0, 1 - pw), rng.uniform(0, 1 - ph)
        c0, r0 = int(round(px * s)), int(round(py * s))
        c1, r1 = min(s, max(c0 + 2, int(round((px + pw) * s)))), min(s, max(r0 + 2, int(round((py + ph) * s))))
        placed = np.array([[c0 / s, r0 / s, c1 / s, r1 / s]], np.float32)
        if len(boxes):
            iw = np.clip(np.minimum(boxes[:, 2], placed[0, 2]) - np.maximum(boxes[:, 0], placed[0, 0]), 0, None)
            ih = np.clip(np.minimum(boxes[:, 3], placed[0, 3]) - np.maximum(boxes[:, 1], placed[0, 1]), 0, None)
            if np.any(iw * ih > max_cover * np.maximum(box_area(boxes), 1e-6)):
                continue
        patch = np.asarray(Image.fromarray(crop).resize((c1 - c0, r1 - r0), Image.BILINEAR), np.float32)
        if rng.random() < 0.5:
            patch = patch[:, ::-1]
        alpha = _paste_alpha(r1 - r0, c1 - c0)
        out = view.copy()
        region = out[r0:r1, c0:c1].astype(np.float32)
        out[r0:r1, c0:c1] = np.clip(alpha * patch + (1 - alpha) * region + 0.5, 0, 255).astype(np.uint8)
        return out, np.concatenate([boxes.reshape(-1, 4), placed]).astype(np.float32)
    return None


class DetectionDataset(torch.utils.data.Dataset):
    """Samples -> (uint8 ``(S, S, 3)`` tensor, ``(M, 4)`` normalised xyxy, ``(M,)`` labels, ``(M,)`` weights).

    Randomness is a function of (seed, epoch, index), so a resumed run sees the same views
    and data-loader workers need no shared generator. ``mosaic``: probability that a training
    view is a 2x2 mosaic of this sample and three random others (positives or negatives),
    each at half size: several separate objects per image, as in group and wide shots, which a
    one-box-per-image teacher never shows. ``paste``: probability that a training view of an
    animal gets more animals, cut from one-box samples (``paste_instance``, each covering at most
    ``paste_cover`` of any animal there): one, then each further one up to ``paste_max`` with
    even odds. Touching and overlapping animals with a box each are what group photos need and
    the teacher cannot give. Backgrounds (negatives) get
    none: a pasted animal there is a lone animal in a strange scene, not a group.
    """

    def __init__(self, samples: list[Sample], size: int, *, train: bool, seed: int = 0, mosaic: float = 0.0,
                 paste: float = 0.0, paste_cover: float = PASTE_COVER, paste_max: int = 1):
        if size % 32:
            raise ValueError(f"input size must be a multiple of 32, got {size}")
        if not 0.0 <= mosaic <= 1.0:
            raise ValueError(f"mosaic must be in [0, 1], got {mosaic}")
        if not 0.0 <= paste <= 1.0:
            raise ValueError(f"paste must be in [0, 1], got {paste}")
        if not 0.0 <= paste_cover <= 1.0:
            raise ValueError(f"paste_cover must be in [0, 1], got {paste_cover}")
        if paste_max < 1:
            raise ValueError(f"paste_max must be >= 1, got {paste_max}")
        self.samples = samples
        self.size = size
        self.train = train
        self.seed = seed
        self.mosaic = mosaic
        self.paste = paste
        self.paste_cover = paste_cover
        self.paste_max = paste_max
        self.donors = [j for j, smp in enumerate(samples) if len(smp.boxes) == 1]
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """(uint8 ``(S, S, 3)`` view, ``(M, 4)`` normalised xyxy, ``(M,)`` labels, ``(M,)`` weights)."""
        sample = self.samples[i]
        image = load_rgb(sample.path)
        if self.train:
            rng = np.random.default_rng([self.seed, self.epoch, i])
            if self.mosaic and rng.random() < self.mosaic:
                others = [self.samples[j] for j in rng.integers(0, len(self.samples), 3)]
                tiles = [augment(image, sample.boxes, self.size // 2, rng)]
                tiles += [augment(load_rgb(o.path), o.boxes, self.size // 2, rng) for o in others]
                view, boxes = mosaic(tiles)
                labels = np.concatenate([sample.labels] + [o.labels for o in others]).astype(np.int64)
                weights = np.concatenate([sample.weights] + [o.weights for o in others]).astype(np.float32)
                return _tensors(view, boxes, labels, weights)
            view, boxes = augment(image, sample.boxes, self.size, rng)
            labels, weights = sample.labels.copy(), sample.weights.copy()
            if self.paste and self.donors and len(boxes) and rng.random() < self.paste:
                # One animal, then each further one (up to ``paste_max`` in all) with even odds.
                for extra in range(self.paste_max):
                    if extra and rng.random() < 0.5:
                        break
                    donor = self.samples[self.donors[int(rng.integers(len(self.donors)))]]
                    pasted = paste_instance(view, boxes, load_rgb(donor.path), donor.boxes[0], rng,
                                            max_cover=self.paste_cover)
                    if pasted is None:
                        break
                    view, boxes = pasted
                    labels = np.concatenate([labels, donor.labels[:1]]).astype(np.int64)
                    weights = np.concatenate([weights, donor.weights[:1]]).astype(np.float32)
            return _tensors(view, boxes, labels, weights)
        h, w = image.shape[:2]
        view = stretch_resize(image, self.size)
        boxes = (sample.boxes / np.array([w, h, w, h], np.float32)).astype(np.float32).reshape(-1, 4)
        return _tensors(view, boxes, sample.labels.copy(), sample.weights.copy())


def _tensors(view, boxes, labels, weights) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    return (torch.from_numpy(np.ascontiguousarray(view)), torch.from_numpy(boxes), torch.from_numpy(labels),
            torch.from_numpy(np.asarray(weights, np.float32)))


def collate(batch: list) -> tuple[torch.Tensor, list[np.ndarray], list[np.ndarray], list[np.ndarray]]:
    """Stack images ``(N, S, S, 3)`` uint8; keep per-image boxes, labels and weights as numpy lists."""
    images = torch.stack([b[0] for b in batch])
    return images, [b[1].numpy() for b in batch], [b[2].numpy() for b in batch], [b[3].numpy() for b in batch]


def negatives_per_epoch(n_positive: int, n_negative: int, neg_fraction: float) -> int:
    """How many negatives an epoch of ``n_positive`` positive views takes: ``neg_fraction`` of the
    epoch, while the ``n_negative`` last."""
    if not 0.0 <= neg_fraction < 1.0:
        raise ValueError(f"neg_fraction must be in [0, 1), got {neg_fraction}")
    return min(n_negative, int(round(n_positive * neg_fraction / (1.0 - neg_fraction))))


def epoch_order(n_positive: int, n_negative: int, neg_fraction: float, rng: np.random.Generator,
                extra: Sequence[int] = (), negative_draw: Sequence[float] | None = None) -> np.ndarray:
    """Indices for one epoch: every positive once (and those in ``extra`` once more per listing),
    plus negatives making up ``neg_fraction`` of the epoch (sampled without replacement while they
    last), shuffled together so each batch mixes both. Positives are ``0..n_positive-1``,
    negatives follow. ``negative_draw``: each negative's relative chance of being drawn (None or
    all equal: uniform, the same draw as before the option existed)."""
    extra = np.asarray(extra, dtype=np.int64)
    if len(extra) and (extra.min() < 0 or extra.max() >= n_positive):
        raise ValueError(f"extra holds an index outside the {n_positive} positives")
    p = None
    if negative_draw is not None:
        draw = np.asarray(negative_draw, dtype=np.float64)
        if draw.shape != (n_negative,) or not (draw > 0).all():
            raise ValueError(f"negative_draw needs {n_negative} positive weights")
        if len(draw) and draw.min() < draw.max():
            p = draw / draw.sum()
    positives = np.concatenate([np.arange(n_positive), extra])
    want = negatives_per_epoch(len(positives), n_negative, neg_fraction)
    negatives = n_positive + rng.choice(n_negative, size=want, replace=False, p=p) if want else []
    order = np.concatenate([positives, np.asarray(negatives, dtype=np.int64)])
    rng.shuffle(order)
    return order
