"""The exported classifier (MODEL_DIR contract) behind ONNX Runtime.

MODEL_DIR holds ``model.onnx`` (input ``images``: uint8 (N, H, W, 3) RGB, dynamic H, W;
outputs ``score`` (N,), ``logit`` (N,), ``cam`` (N, h, w)) and ``manifest.json``
(``input_size``, default 224). Preprocessing lives inside the graph.

``features`` (N, C, h, w), the backbone's last block output (the tensor the 1280-d head
conv reads), is not a named output of the contract; it is exposed by adding that tensor as
an extra graph output at load time, found structurally: head ``Conv -> Clip -> Mul(coef)``.
So every classifier MODEL_DIR ever exported has it; a graph without that shape fails with
a clear message only when features are asked for.
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
        self._onnx_path, self._options = onnx_path, options
        self._feature_session = None

    def features(self, images: np.ndarray) -> np.ndarray:
        """(N, S, S, 3) uint8 -> (N, C, S/32, S/32) float32: the backbone's last block output."""
        if self._feature_session is None:
            import onnxruntime as ort

            graph = _with_feature_output(self._onnx_path)
            self._feature_session = ort.InferenceSession(graph, sess_options=self._options, providers=providers())
        images = np.ascontiguousarray(images, dtype=np.uint8)
        if images.ndim != 4 or images.shape[3] != 3:
            raise ValueError(f"images must be (N, H, W, 3) uint8, got shape {images.shape}")
        return self._feature_session.run([FEATURES], {"images": images})[0]

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


FEATURES = "features"


def _with_feature_output(onnx_path: Path) -> bytes:
    """The serialised graph with the head conv's input exposed as output ``features``."""
    import onnx

    model = onnx.load(str(onnx_path))
    producers = {out: node for node in model.graph.node for out in node.output}
    mul = next((n for n in model.graph.node if n.op_type == "Mul" and "coef" in n.input), None)
    clip = producers.get(next((i for i in mul.input if i != "coef"), "")) if mul is not None else None
    conv = producers.get(clip.input[0]) if clip is not None and clip.op_type == "Clip" else None
    if conv is None or conv.op_type != "Conv":
        raise LabelfreeError("invalid", f"{onnx_path}: no head 'Conv -> Clip -> Mul(coef)' found, so no backbone "
                                        "features for the foreground method; re-export the classifier or use "
                                        "--method cam")
    model.graph.output.append(onnx.helper.make_tensor_value_info(FEATURES, onnx.TensorProto.FLOAT, None))
    model.graph.node.append(onnx.helper.make_node("Identity", [conv.input[0]], [FEATURES]))
    return model.SerializeToString()


def resize(image: np.ndarray, side: int) -> np.ndarray:
    """Stretch an (H, W, 3) uint8 image to (side, side, 3), as the classifier was trained."""
    if image.shape[0] == side and image.shape[1] == side:
        return image
    return np.asarray(Image.fromarray(image).resize((side, side), Image.BILINEAR))
