"""Backbone + logistic head as ONE ONNX graph, checked against PyTorch.

Graph contract (MODEL_DIR/model.onnx):
- input ``images``: uint8 ``(N, H, W, 3)`` RGB, N/H/W dynamic; callers stretch to
  ``input_size`` (manifest) for the trained behaviour; ``(x - 127) / 128`` and NHWC->NCHW
  happen inside;
- ``cam`` float32 ``(N, h, w)``: ``w . f(x, y) + b`` per cell of the last feature map
  (``h = H / 32`` for H a multiple of 32), so ``cam.mean((1, 2)) == logit``;
- ``logit`` float32 ``(N,)``; ``score`` float32 ``(N,)`` = sigmoid(logit) = P(positive).
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import torch

from labelfree.core.backbone import preprocess_uint8

OUTPUTS = ("score", "logit", "cam")
FORMAT = "labelfree.classifier"
FORMAT_VERSION = "1.0"


class ClassifierGraph(torch.nn.Module):
    """uint8 NHWC images -> (score (N,), logit (N,), cam (N, h, w))."""

    def __init__(self, backbone: torch.nn.Module, coef: np.ndarray, intercept: float):
        super().__init__()
        self.backbone = backbone
        self.register_buffer("coef", torch.as_tensor(np.asarray(coef), dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("intercept", torch.tensor(float(intercept), dtype=torch.float32))

    def forward(self, images: torch.Tensor):
        fmap = self.backbone(preprocess_uint8(images))
        cam = (fmap * self.coef).sum(dim=1) + self.intercept
        logit = cam.mean(dim=(1, 2))
        return torch.sigmoid(logit), logit, cam


def export_classifier(backbone: torch.nn.Module, coef: np.ndarray, intercept: float, path: str | Path,
                      *, check_images: np.ndarray | None = None, atol: float = 1e-4) -> float:
    """Export to ``path`` and return the worst ONNX-vs-PyTorch error over all outputs.

    The error is ``|onnx - torch| / max(1, max |torch|)`` per output: absolute for ``score``
    and small logits, relative once a confident head makes logits large (float32 sums over
    1280 channels then differ by more than 1e-4 in absolute terms).

    ``check_images``: uint8 ``(N, H, W, 3)`` to compare on (default: 2 random 224 images and
    one 256x192 image, to exercise the dynamic axes). Raises RuntimeError above ``atol``.
    """
    from labelfree.trainer.featurize import make_session

    graph = ClassifierGraph(backbone, coef, intercept).eval()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    size = getattr(backbone, "input_size", 224)
    sample = torch.zeros((1, size, size, 3), dtype=torch.uint8)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            graph, (sample,), str(path), input_names=["images"], output_names=list(OUTPUTS),
            dynamic_axes={"images": {0: "N", 1: "H", 2: "W"}, "score": {0: "N"}, "logit": {0: "N"},
                          "cam": {0: "N", 1: "h", 2: "w"}},
            opset_version=17, dynamo=False,
        )
    rng = np.random.default_rng(0)
    batches = [check_images] if check_images is not None else [
        rng.integers(0, 256, (2, size, size, 3), dtype=np.uint8),
        rng.integers(0, 256, (1, 256, 192, 3), dtype=np.uint8),
    ]
    session = make_session(path)
    worst = 0.0
    for batch in batches:
        got = session.run(list(OUTPUTS), {"images": batch})
        with torch.no_grad():
            want = graph(torch.from_numpy(batch))
        for g, w in zip(got, want):
            w = w.numpy()
            worst = max(worst, float(np.abs(g - w).max() / max(1.0, float(np.abs(w).max()))))
    if worst > atol:
        raise RuntimeError(f"ONNX and PyTorch differ by {worst:.2e} > {atol:.0e}")
    return worst


def build_manifest(*, backbone, threshold: float, labels: dict, training: dict, metrics: dict,
                   onnx_check_max_abs_diff: float, code_version: str) -> dict:
    """The MODEL_DIR manifest: how to feed the graph, what comes out, and where it came from."""
    size = int(backbone.input_size)
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "kind": "classifier",
        "backbone": backbone.name,
        "backbone_version": backbone.version,
        "feat_dim": int(backbone.feat_dim),
        "input_size": size,
        "inputs": [{"name": "images", "dtype": "uint8", "shape": ["N", "H", "W", 3], "layout": "NHWC",
                    "channels": "RGB"}],
        "outputs": [
            {"name": "score", "dtype": "float32", "shape": ["N"], "meaning": "P(positive)"},
            {"name": "logit", "dtype": "float32", "shape": ["N"], "meaning": "log-odds of positive"},
            {"name": "cam", "dtype": "float32", "shape": ["N", "h", "w"],
             "meaning": "per-cell logit contribution w.f(x,y)+b of the last feature map; mean over cells == logit",
             "stride": 32},
        ],
        "preprocessing": {
            "outside_graph": f"decode, apply EXIF orientation, convert to RGB, stretch to {size}x{size} "
                             "with bilinear resampling (PIL Image.BILINEAR), uint8 NHWC",
            "inside_graph": "x = (float(x) - 127) / 128; NHWC -> NCHW",
            "mean": [127.0, 127.0, 127.0], "std": [128.0, 128.0, 128.0],
            "resize": "stretch", "interpolation": "bilinear",
        },
        "threshold": float(threshold),
        "labels": labels,
        "training": training,
        "metrics": metrics,
        "onnx_check_max_abs_diff": onnx_check_max_abs_diff,
        "code_version": code_version,
    }


def write_json(path: str | Path, obj: dict) -> None:
    Path(path).write_text(json.dumps(obj, indent=2, sort_keys=False) + "\n")
