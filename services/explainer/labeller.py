"""Turn a classifier into a box labeller: LIME and/or class-activation evidence -> boxes.

Evidence sources, each an (H, W) float map at the image's own resolution:
- LIME (model-agnostic): superpixel ridge weights of the classifier's logit (``lime.explain``).
- CAM (this classifier family): the graph's ``cam`` output, per-cell logit contribution,
  averaged over a few input scales. ``cam > 0`` means "this cell alone votes positive",
  a threshold that comes from the model, not from tuning.

- foreground (default): a per-dataset linear classifier of the backbone's finer features
  (last block output at ``fg_side`` = 448: 14 x 14 cells) taught by the CAM's sign on the
  dataset's own positives (``foreground.py``); ``> 0`` is foreground. Needs a fitted
  ``ForegroundModel`` (``batch.fit_foreground``: one pass over the dataset first).

  Two animals that touch are one region at that grid, so the default adds *candidate* boxes:
  the same discriminant on a finer grid (``candidate_side`` = 640: 20 x 20 cells), split at
  lower saddles (``candidate_split_h``). A candidate that differs from every region box
  (IoU < 0.7) is kept, scored below ``CANDIDATE_WEIGHT`` x the image's weakest region box, so
  the top box (CorLoc) never changes and the second and third animals get a ranked box
  (AP@0.5 on lion/dev 0.496 -> 0.571, bench/results/explainer.md). The detector trains on an
  image's boxes scoring at least that share of its top box, so candidates are not its labels.

``method`` picks "foreground", "cam", "lime" or "lime+cam" (CAM cells kept where LIME
agrees, see ``fuse``). If the classifier says the object is absent, there are no boxes.

Conventions: image (H, W, 3) uint8 RGB; boxes (N, 4) float32 xyxy pixels of that image;
scores (N,) float32 = P(positive) * share of evidence in the box.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from PIL import Image

from labelfree.explainer.boxes import box_iou, mask_boxes, scale_boxes, select_segments
from labelfree.explainer.foreground import ForegroundModel, upsample
from labelfree.explainer.lime import Explanation, Predict, explain

METHODS = ("foreground", "cam", "lime", "lime+cam")
CANDIDATE_WEIGHT = 0.5  # a candidate box scores below this x the image's weakest region box
CANDIDATE_IOU = 0.7     # a candidate overlapping a region box this much adds nothing
BOX_SIDE = 320          # foreground boxes are read off the evidence at most this long a side (8 px per cell of
                        # the finest grid, 40 x 40 at 640), then scaled to the photo: the watershed costs per pixel


@dataclass(frozen=True)
class LabelConfig:
    """Parameters of the labeller (defaults chosen by principle, see bench/results/explainer.md)."""

    method: str = "foreground"  # measured best (bench/results/explainer.md); LIME stays available
    n_samples: int = 256
    n_segments: int = 80
    fill: str = "blur"
    threshold: float = 0.8          # LIME: cumulative positive-weight share of selected superpixels
    cam_sizes: tuple[int, ...] = (224, 320)  # the training scale and one finer: measured best on both models
    fg_side: int = 448              # 14x14 feature cells (2x the CAM's grid), ~native photo size; not tuned
    fg_rounds: int = 10             # foreground: at most this many self-training refits (0: the CAM-taught fit)
    fg_tol: float = 0.01            # ... stopping when fewer than this share of cells change label
    fg_fine: bool = True            # foreground: fit a second level on the stride-16 features too
    split_h: float | None = 0.5     # watershed split of touching animals (None: connected components only)
    candidate_side: int | None = 640  # foreground: finer grid for candidate boxes (None: no candidates)
    candidate_split_h: float = 0.2  # foreground: the candidates' watershed split
    min_area: float = 0.01
    min_share: float = 0.05
    merge_gap: float = 0.05
    present_below: float | None = None  # P(positive) under this: no boxes (None: the model's threshold, else 0.5)
    batch_size: int = 64

    def __post_init__(self):
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {self.method!r}")
        if self.n_samples < 2:
            raise ValueError(f"n_samples must be >= 2, got {self.n_samples}")
        if self.fg_side < 32 or self.fg_side % 32:
            raise ValueError(f"fg_side must be a positive multiple of 32, got {self.fg_side}")
        if self.fg_rounds < 0 or not 0 <= self.fg_tol < 1:
            raise ValueError(f"fg_rounds must be >= 0 and fg_tol in [0, 1), got {self.fg_rounds}, {self.fg_tol}")
        if self.candidate_side is not None and (self.candidate_side < 32 or self.candidate_side % 32):
            raise ValueError(f"candidate_side must be a positive multiple of 32, got {self.candidate_side}")


@dataclass
class Labelled:
    """Boxes for one image plus what produced them (for overlays and reports)."""

    boxes: np.ndarray
    scores: np.ndarray
    probability: float
    evidence: np.ndarray | None = None       # (H, W) float32 map the boxes came from
    explanation: Explanation | None = None   # LIME result at the model resolution
    info: dict = field(default_factory=dict)


def _resize(image: np.ndarray, side: int) -> np.ndarray:
    if image.shape[:2] == (side, side):
        return image
    return np.asarray(Image.fromarray(image).resize((side, side), Image.BILINEAR))


def cam_evidence(image: np.ndarray, run_cam, sizes: tuple[int, ...],
                 presence_side: int = 224) -> tuple[np.ndarray, float, float]:
    """Multi-scale CAM: mean over ``sizes`` of the upsampled per-cell logit map.

    run_cam: callable (1, S, S, 3) uint8 -> dict with "score" (1,), "logit" (1,), "cam" (1, h, w).
    Returns (evidence (H, W) float32, P(positive), logit), the last two at ``presence_side``
    (the classifier's training size: its probability is calibrated there, not at other scales).
    """
    maps, prob, logit = [], None, None
    for side in sizes:
        out = run_cam(_resize(image, side)[None])
        if side == presence_side:
            prob, logit = float(out["score"][0]), float(out["logit"][0])
        maps.append(upsample(out["cam"][0], image.shape[:2]))
    if prob is None:
        out = run_cam(_resize(image, presence_side)[None])
        prob, logit = float(out["score"][0]), float(out["logit"][0])
    return np.mean(maps, axis=0).astype(np.float32), prob, logit


def cam_labels(image: np.ndarray, run_cam, sizes: tuple[int, ...], grids: list[tuple[int, int]]) -> list[np.ndarray]:
    """(h, w) bool per grid: the multi-scale CAM resampled to each feature grid, > 0 (the foreground teacher)."""
    cams = [run_cam(_resize(image, side)[None])["cam"][0] for side in sizes]
    return [np.mean([upsample(cam, tuple(grid)) for cam in cams], axis=0) > 0 for grid in grids]


def presence(image: np.ndarray, run_cam, side: int) -> float:
    """P(positive) at the classifier's training size."""
    return float(run_cam(_resize(image, side)[None])["score"][0])


def fuse(cam: np.ndarray, lime_map: np.ndarray) -> np.ndarray:
    """LIME+CAM evidence: the CAM where LIME's superpixel weight is not negative, else the LIME map.

    Why: CAM has the shape of the object but leaks onto context at its coarse cells; LIME is
    sharp at superpixel edges but noisy. Where LIME says a superpixel hurts the logit, trust it.
    """
    scale = np.abs(cam).max() / max(np.abs(lime_map).max(), 1e-12)
    return np.where(lime_map >= 0, cam, lime_map * scale).astype(np.float32)


def label_image(image: np.ndarray, *, rng: np.random.Generator, config: LabelConfig = LabelConfig(),
                predict_logit: Predict | None = None, run_cam=None, model_side: int = 224,
                model_threshold: float = 0.5, run_features=None,
                foreground: ForegroundModel | None = None) -> Labelled:
    """Boxes for one (H, W, 3) uint8 image.

    predict_logit: (N, S, S, 3) uint8 -> (N,) logits, for LIME (any classifier).
    run_cam: ONNX-style callable returning score/logit/cam, for CAM methods.
    model_side: LIME works on the image stretched to (model_side, model_side); boxes are scaled back.
    model_threshold: the classifier's own decision threshold, used when config.present_below is None.
    run_features: (1, S, S, 3) uint8 -> ((1, C, h, w) features, (1, C', 2h, 2w) stride-16 features
        or None), and ``foreground`` the fitted ForegroundModel, for method "foreground".
    """
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"image must be (H, W, 3) uint8, got shape {image.shape} dtype {image.dtype}")
    hw = image.shape[:2]
    cfg = config
    needs_lime = cfg.method in ("lime", "lime+cam")
    needs_cam = cfg.method in ("cam", "lime+cam")
    if needs_lime and predict_logit is None:
        raise ValueError(f"method {cfg.method!r} needs predict_logit")
    if needs_cam and run_cam is None:
        raise ValueError(f"method {cfg.method!r} needs run_cam")
    if cfg.method == "foreground":
        return _label_foreground(image, cfg, run_cam, run_features, foreground, model_side, model_threshold)

    cam = prob = None
    if needs_cam:
        cam, prob, _ = cam_evidence(image, run_cam, cfg.cam_sizes, presence_side=model_side)
    small = _resize(image, model_side)
    if prob is None:
        base_logit = float(np.asarray(predict_logit(small[None])).reshape(-1)[0])
        prob = float(1.0 / (1.0 + np.exp(-base_logit)))
    empty = Labelled(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), prob, info={"absent": True})
    if prob < (cfg.present_below if cfg.present_below is not None else model_threshold):
        return empty

    explanation = None
    if needs_lime:
        explanation = explain(small, predict_logit, rng=rng, n_segments=cfg.n_segments, n_samples=cfg.n_samples,
                              fill=cfg.fill, batch_size=cfg.batch_size)
    if cfg.method == "lime":
        selected = select_segments(explanation.weights, cfg.threshold)
        evidence_small = explanation.weight_map()
        boxes, share = mask_boxes(selected[explanation.segments], evidence_small, min_area=cfg.min_area,
                                  min_share=cfg.min_share, merge_gap=cfg.merge_gap, split_h=cfg.split_h)
        boxes = scale_boxes(boxes, small.shape[:2], hw)
        evidence = upsample(evidence_small, hw)
    else:
        evidence = cam if cfg.method == "cam" else fuse(cam, _upsample_labels(explanation, hw))
        boxes, share = mask_boxes(evidence > 0, evidence, min_area=cfg.min_area, min_share=cfg.min_share,
                                  merge_gap=cfg.merge_gap, split_h=cfg.split_h)
    info = {"absent": False}
    if explanation is not None:
        info.update(r2=explanation.r2, intercept=explanation.intercept)
    return Labelled(boxes, (share * prob).astype(np.float32), prob, evidence, explanation, info)


def _upsample_labels(explanation: Explanation, hw: tuple[int, int]) -> np.ndarray:
    """The LIME weight map at (H, W), nearest-neighbour so superpixel edges stay sharp."""
    seg = np.asarray(Image.fromarray(explanation.segments.astype(np.int32), mode="I").resize(
        (hw[1], hw[0]), Image.NEAREST))
    return explanation.weights.astype(np.float32)[seg]


def _label_foreground(image, cfg: LabelConfig, run_cam, run_features, foreground, model_side: int,
                      model_threshold: float) -> Labelled:
    if run_cam is None or run_features is None or foreground is None:
        raise ValueError("method 'foreground' needs run_cam, run_features and a fitted foreground model")
    if foreground.side != cfg.fg_side:
        raise ValueError(f"foreground model was fitted at side {foreground.side}, config asks {cfg.fg_side}")
    hw = image.shape[:2]
    prob = presence(image, run_cam, model_side)
    if prob < (cfg.present_below if cfg.present_below is not None else model_threshold):
        return Labelled(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), prob, info={"absent": True})
    boxes, share, evidence = _foreground_boxes(image, cfg.fg_side, cfg, cfg.split_h, run_features, foreground)
    if len(boxes) == 0:  # no cell passes: the whole image, the honest box for a close-up
        boxes, share = np.array([[0, 0, hw[1], hw[0]]], np.float32), np.ones(1, np.float32)
    n_regions = len(boxes)
    if cfg.candidate_side is not None:
        boxes, share = _with_candidates(image, boxes, share, cfg, run_features, foreground)
    info = {"absent": False, "candidates": len(boxes) - n_regions}
    return Labelled(boxes, (share * prob).astype(np.float32), prob, evidence, None, info)


def _with_candidates(image, boxes, share, cfg: LabelConfig, run_features, foreground: ForegroundModel):
    """Region boxes plus the finer grid's split boxes that differ from all of them, ranked below them."""
    extra, extra_share, _ = _foreground_boxes(image, cfg.candidate_side, cfg, cfg.candidate_split_h, run_features,
                                              foreground)
    if len(extra) < 2:  # one region at the finer grid too: nothing the region boxes lack
        return boxes, share
    new = box_iou(extra, boxes).max(axis=1) < CANDIDATE_IOU
    scaled = CANDIDATE_WEIGHT * float(share.min()) * extra_share[new]
    return np.concatenate([boxes, extra[new]]), np.concatenate([share, scaled.astype(share.dtype)])


def _foreground_boxes(image: np.ndarray, side: int, cfg: LabelConfig, split_h: float | None, run_features,
                      foreground: ForegroundModel) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Boxes (pixels of ``image``) and shares of the foreground evidence for the image stretched to
    ``side``, read off the evidence at ``BOX_SIDE``; plus that evidence map."""
    features, fine = run_features(_resize(image, side)[None])
    grid = foreground.evidence_map(features[0], fine[0] if fine is not None else None)
    hw = image.shape[:2]
    scale = min(1.0, BOX_SIDE / max(hw))
    work = (max(1, round(hw[0] * scale)), max(1, round(hw[1] * scale)))
    evidence = upsample(grid, work)
    boxes, share = mask_boxes(evidence > 0, evidence, min_area=cfg.min_area, min_share=cfg.min_share,
                              merge_gap=cfg.merge_gap, split_h=split_h)
    return scale_boxes(boxes, work, hw), share, evidence
