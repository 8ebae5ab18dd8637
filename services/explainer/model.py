"""The exported classifier (MODEL_DIR contract) behind ONNX Runtime.

MODEL_DIR holds ``model.onnx`` (input ``images``: uint8 (N, H, W, 3) RGB, dynamic H, W;
outputs ``score`` (N,), ``logit`` (N,), ``cam`` (N, h, w)) and ``manifest.json``
(``input_size``, default 224). Preprocessing lives inside the graph.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

from labelfree.core.errors import LabelfreeError


def providers() -> list[str]:
    """ONNX Runtime providers to use: CUDA first when this build and machine have it."""
    import onnxruntime as ort

    available = ort.get_available_providers()
    return [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available]


class OnnxClassifier:
    """One ONNX Runtime session over a classifier MODEL_DIR. Not thread-safe to construct; cheap to call."""

    def __init__(self, model_dir: str | Path, *, threads: int | None = None):
        import onnxruntime as ort

        model_dir = Path(model_dir)
        onnx_path = model_dir / "model.onnx"
        if not onnx_path.is_file():
            raise LabelfreeError("not_found", f"{onnx_path} not found: not a classifier MODEL_DIR")
        manifest_path = model_dir / "manifest.json"
        self.manifest = json.loads(manifest_path.read_text()) if manifest_path.is_file() else {}
        self.input_size = int(self.manifest.get("input_size", 224))
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(str(onnx_path), sess_options=options, providers=providers())
        outputs = {o.name for o in self.session.get_outputs()}
        missing = {"score", "logit", "cam"} - outputs
        if missing:
            raise LabelfreeError("invalid", f"{onnx_path} lacks outputs {sorted(missing)}")

    def run(self, images: np.ndarray, outputs: tuple[str, ...] = ("score", "logit", "cam")) -> dict[str, np.ndarray]:
        """Run a uint8 (N, H, W, 3) batch; returns the named outputs as float32 arrays."""
        images = np.ascontiguousarray(images, dtype=np.uint8)
        if images.ndim != 4 or images.shape[3] != 3:
            raise ValueError(f"images must be (N, H, W, 3) uint8, got shape {images.shape}")
        values = self.session.run(list(outputs), {"images": images})
        return dict(zip(outputs, values))

    def logit(self, images: np.ndarray) -> np.ndarray:
        """(N, H, W, 3) uint8 -> (N,) float32 logits: the LIME target."""
        return self.run(images, ("logit",))["logit"].reshape(-1)

    def score(self, images: np.ndarray) -> np.ndarray:
        """(N, H, W, 3) uint8 -> (N,) float32 P(positive)."""
        return self.run(images, ("score",))["score"].reshape(-1)


def resize(image: np.ndarray, side: int) -> np.ndarray:
    """Stretch an (H, W, 3) uint8 image to (side, side, 3), as the classifier was trained."""
    if image.shape[0] == side and image.shape[1] == side:
        return image
    return np.asarray(Image.fromarray(image).resize((side, side), Image.BILINEAR))
