"""The exported classifier (MODEL_DIR contract) behind ONNX Runtime.

MODEL_DIR holds ``model.onnx`` (input ``images``: uint8 (N, H, W, 3) RGB, dynamic H, W;
outputs ``score`` (N,), ``logit`` (N,), ``cam`` (N, h, w)) and ``manifest.json``
(``input_size``, default 224). Preprocessing lives inside the graph.

``features`` (N, C, h, w), the backbone's last block output (the tensor the 1280-d head
conv reads), is not a named output of the contract; it is exposed by adding that tensor as
an extra graph output at load time, found structurally: head ``Conv -> Clip -> Mul(coef)``.
So every classifier MODEL_DIR ever exported has it; a graph without that shape fails with
a clear message only when features are asked for. ``taps`` also exposes the last stride-16
block output (N, C', 2h, 2w), found the same way: the input of the expand conv that feeds the
graph's last stride-2 conv. A graph without it gives ``None`` there (the foreground method
then fits its coarse level only).

On a GPU the same MODEL_DIR runs in one of two ways (``load_classifier``): ONNX Runtime's CUDA
provider when the installed build has it, else ``TorchClassifier``: the pretrained backbone the
manifest names (its weight file's hash must match ``backbone_version``) with the head's
``coef`` and ``intercept`` read from the graph, on CUDA. Same outputs, same contract.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
from PIL import Image

from labelfree.core.errors import LabelfreeError


def providers() -> list[str]:
    """ONNX Runtime providers to use: CUDA first when this build and machine have it."""
    import onnxruntime as ort

    available = ort.get_available_providers()
    return [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available]


def _cuda_in_torch(*, probe: bool = True) -> bool:
    """True when PyTorch sees a CUDA device. With ``probe``, torch is imported only where an
    NVIDIA driver shows (CPU-only Spark executors skip the import)."""
    if probe and not (Path("/proc/driver/nvidia").exists() or shutil.which("nvidia-smi")):
        return False
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


def load_classifier(model_dir: str | Path, *, threads: int | None = None, device: str = "auto"):
    """The classifier of MODEL_DIR for this machine.

    ``device``: ``cpu`` (ONNX Runtime, CPU provider first), ``cuda`` (ONNX Runtime's CUDA
    provider when present, else PyTorch on CUDA; raises when neither is there), ``auto``
    (``cuda`` when a GPU is usable, else ``cpu``).
    """
    if device not in ("auto", "cpu", "cuda"):
        raise ValueError(f"device must be auto, cpu or cuda, got {device!r}")
    if device == "cpu":
        return OnnxClassifier(model_dir, threads=threads, cpu_only=True)
    if "CUDAExecutionProvider" in providers():
        return OnnxClassifier(model_dir, threads=threads)
    if _cuda_in_torch(probe=device == "auto"):
        return TorchClassifier(model_dir, device="cuda")
    if device == "cuda":
        raise LabelfreeError("invalid", "device 'cuda' asked for, but neither ONNX Runtime's CUDA provider "
                                        "nor a CUDA build of PyTorch with a visible GPU is here")
    return OnnxClassifier(model_dir, threads=threads)


def _read_manifest(model_dir: Path) -> dict:
    onnx_path = model_dir / "model.onnx"
    if not onnx_path.is_file():
        raise LabelfreeError("not_found", f"{onnx_path} not found: not a classifier MODEL_DIR")
    manifest_path = model_dir / "manifest.json"
    return json.loads(manifest_path.read_text()) if manifest_path.is_file() else {}


def _check_batch(images: np.ndarray) -> np.ndarray:
    images = np.ascontiguousarray(images, dtype=np.uint8)
    if images.ndim != 4 or images.shape[3] != 3:
        raise ValueError(f"images must be (N, H, W, 3) uint8, got shape {images.shape}")
    return images


class _Outputs:
    """``logit`` and ``score`` on top of ``run``: shared by both runtimes."""

    def run(self, images: np.ndarray, outputs: tuple[str, ...] = ("score", "logit", "cam")) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def logit(self, images: np.ndarray) -> np.ndarray:
        """(N, H, W, 3) uint8 -> (N,) float32 logits: the LIME target."""
        return self.run(images, ("logit",))["logit"].reshape(-1)

    def score(self, images: np.ndarray) -> np.ndarray:
        """(N, H, W, 3) uint8 -> (N,) float32 P(positive)."""
        return self.run(images, ("score",))["score"].reshape(-1)

    @property
    def lime_predict(self):
        """What LIME scores perturbations with (``lime.explain``'s ``predict``)."""
        return self.logit


class OnnxClassifier(_Outputs):
    """One ONNX Runtime session over a classifier MODEL_DIR. Not thread-safe to construct; cheap to call."""

    def __init__(self, model_dir: str | Path, *, threads: int | None = None, cpu_only: bool = False):
        import onnxruntime as ort

        model_dir = Path(model_dir)
        onnx_path = model_dir / "model.onnx"
        self.manifest = _read_manifest(model_dir)
        self.input_size = int(self.manifest.get("input_size", 224))
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
        chosen = ["CPUExecutionProvider"] if cpu_only else providers()
        self.device = "cuda" if chosen[0] == "CUDAExecutionProvider" else "cpu"
        self.session = ort.InferenceSession(str(onnx_path), sess_options=options, providers=chosen)
        outputs = {o.name for o in self.session.get_outputs()}
        missing = {"score", "logit", "cam"} - outputs
        if missing:
            raise LabelfreeError("invalid", f"{onnx_path} lacks outputs {sorted(missing)}")
        self._onnx_path, self._options, self._providers = onnx_path, options, chosen
        self._feature_session = self._feature_names = None

    def features(self, images: np.ndarray) -> np.ndarray:
        """(N, S, S, 3) uint8 -> (N, C, S/32, S/32) float32: the backbone's last block output."""
        return self.taps(images)[0]

    def taps(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """(N, S, S, 3) uint8 -> (features (N, C, S/32, S/32), fine (N, C', S/16, S/16) or None):
        the last block output and the last stride-16 block output, from one run."""
        if self._feature_session is None:
            import onnxruntime as ort

            graph, self._feature_names = _with_feature_output(self._onnx_path)
            self._feature_session = ort.InferenceSession(graph, sess_options=self._options,
                                                         providers=self._providers)
        out = self._feature_session.run(self._feature_names, {"images": _check_batch(images)})
        return out[0], (out[1] if len(out) > 1 else None)

    def run(self, images: np.ndarray, outputs: tuple[str, ...] = ("score", "logit", "cam")) -> dict[str, np.ndarray]:
        """Run a uint8 (N, H, W, 3) batch; returns the named outputs as float32 arrays."""
        values = self.session.run(list(outputs), {"images": _check_batch(images)})
        return dict(zip(outputs, values))


class TorchClassifier(_Outputs):
    """The MODEL_DIR's network in PyTorch (for a GPU without ONNX Runtime's CUDA provider).

    The backbone is rebuilt from the offline weights the manifest names; the head (``coef``,
    ``intercept``) is read from the graph's initializers. Refuses a MODEL_DIR whose backbone
    weights differ from the installed ones, since the outputs would silently differ.
    """

    def __init__(self, model_dir: str | Path, *, device: str = "cuda"):
        import onnx
        import torch
        from onnx import numpy_helper

        from labelfree.core.backbone import load_backbone

        model_dir = Path(model_dir)
        self.manifest = _read_manifest(model_dir)
        self.input_size = int(self.manifest.get("input_size", 224))
        name = self.manifest.get("backbone")
        if not name:
            raise LabelfreeError("invalid", f"{model_dir}/manifest.json names no backbone: cannot rebuild it in PyTorch")
        backbone = load_backbone(name)
        want = self.manifest.get("backbone_version")
        if want and want != backbone.version:
            raise LabelfreeError("invalid", f"{model_dir} was trained on backbone weights {want}, but the installed "
                                            f"ones are {backbone.version}; use ONNX Runtime (device cpu)")
        weights = {t.name: numpy_helper.to_array(t) for t in onnx.load(str(model_dir / "model.onnx")).graph.initializer}
        if "coef" not in weights or "intercept" not in weights:
            raise LabelfreeError("invalid", f"{model_dir}/model.onnx has no 'coef'/'intercept' head to rebuild")
        self.device = torch.device(device)
        self.backbone = backbone.to(self.device).eval()
        coef = np.array(weights["coef"], dtype=np.float32).reshape(1, -1, 1, 1)
        self.coef = torch.from_numpy(coef).to(self.device)
        self.intercept = float(weights["intercept"])

    def _forward(self, images, features: bool = False):
        """uint8 (N, H, W, 3), numpy or a tensor on the device -> cam (N, h, w), or with ``features``
        (last block output, last stride-16 block output)."""
        import torch

        from labelfree.core.backbone import preprocess_uint8

        x = images if isinstance(images, torch.Tensor) else torch.from_numpy(_check_batch(images)).to(self.device)
        with torch.inference_mode():
            x = self.backbone.stem(preprocess_uint8(x))
            fine = None
            for block in self.backbone.blocks:
                before, x = x, block(x)
                if x.shape[-1] < before.shape[-1]:  # a stride-2 block: what came in is the finer tap
                    fine = before
            if features:
                return x, fine
            return (self.backbone.head(x) * self.coef).sum(dim=1) + self.intercept

    def features(self, images: np.ndarray) -> np.ndarray:
        """(N, S, S, 3) uint8 -> (N, C, S/32, S/32) float32: the backbone's last block output."""
        return self.taps(images)[0]

    def taps(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """As ``OnnxClassifier.taps``: (last block output, last stride-16 block output)."""
        coarse, fine = self._forward(images, features=True)
        return coarse.cpu().numpy(), (fine.cpu().numpy() if fine is not None else None)

    def run(self, images: np.ndarray, outputs: tuple[str, ...] = ("score", "logit", "cam")) -> dict[str, np.ndarray]:
        import torch

        cam = self._forward(images)
        logit = cam.mean(dim=(1, 2))
        values = {"cam": cam, "logit": logit, "score": torch.sigmoid(logit)}
        return {name: values[name].cpu().numpy() for name in outputs}

    @property
    def lime_predict(self):
        return _TorchLogit(self)


class _TorchLogit:
    """LIME's ``predict`` for a TorchClassifier: composes the perturbed images on its device."""

    def __init__(self, model: TorchClassifier):
        self.model = model

    def __call__(self, images: np.ndarray) -> np.ndarray:
        return self.model.logit(images)

    def score_masks(self, image: np.ndarray, segments: np.ndarray, masks: np.ndarray, *, fill: np.ndarray,
                    batch_size: int) -> np.ndarray:
        """(n, K) bool masks -> (n,) logits; only the masks travel per batch."""
        import torch

        device = self.model.device
        shown = torch.from_numpy(np.ascontiguousarray(image, dtype=np.uint8)).to(device)
        hidden = torch.from_numpy(np.ascontiguousarray(fill, dtype=np.uint8)).to(device)
        labels = torch.from_numpy(np.asarray(segments, dtype=np.int64)).to(device)
        on_off = torch.from_numpy(np.ascontiguousarray(masks, dtype=bool)).to(device)
        out = []
        for start in range(0, len(masks), batch_size):
            on = on_off[start:start + batch_size][:, labels]  # (b, H, W) bool, on the device
            out.append(self.model._forward(torch.where(on[..., None], shown, hidden)).mean(dim=(1, 2)))
        return torch.cat(out).double().cpu().numpy()


FEATURES = "features"
FINE = "fine_features"


def _with_feature_output(onnx_path: Path) -> tuple[bytes, list[str]]:
    """The serialised graph with the head conv's input exposed as output ``features`` and, when
    found, the last stride-16 block output as ``fine_features``; plus the names exposed."""
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
    names = [FEATURES]
    taps = [conv.input[0]]
    fine = _fine_tap(model.graph.node, producers)
    if fine is not None:
        names.append(FINE)
        taps.append(fine)
    for name, tensor in zip(names, taps):
        model.graph.output.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
        model.graph.node.append(onnx.helper.make_node("Identity", [tensor], [name]))
    return model.SerializeToString(), names


def _fine_tap(nodes, producers) -> str | None:
    """The input of the block that last halves the resolution: walk back from the graph's last
    stride-2 conv (the depthwise conv) through its pad/activation to the expand conv, whose input
    is the stride-16 block output. None when the graph has no such block."""
    strided = [n for n in nodes if n.op_type == "Conv"
               and any(a.name == "strides" and list(a.ints) == [2, 2] for a in n.attribute)]
    node = strided[-1] if strided else None
    for _ in range(8):  # a handful of elementwise ops at most between the two convs
        node = producers.get(node.input[0]) if node is not None else None
        if node is None:
            return None
        if node.op_type == "Conv":
            return node.input[0]
    return None


def resize(image: np.ndarray, side: int) -> np.ndarray:
    """Stretch an (H, W, 3) uint8 image to (side, side, 3), as the classifier was trained."""
    if image.shape[0] == side and image.shape[1] == side:
        return image
    return np.asarray(Image.fromarray(image).resize((side, side), Image.BILINEAR))
