"""Detector backends behind one interface: Triton (KServe v2 gRPC) and in-process ONNX Runtime.

Both take the same ``(N, S, S, 3)`` uint8 batch and return the same raw tensors; the
pre- and post-processing around them (``Detector``) is shared, so both give identical
detections for the same model and image.

Failures to reach the model (Triton down, model not ready, timeout) raise
``LabelfreeError("unavailable")`` with ``retry_after``, which the API renders as 503.
"""

from __future__ import annotations

import json
import os
import threading
import time
from abc import ABC, abstractmethod
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple, Sequence

import numpy as np
from PIL import Image

from labelfree.core.errors import LabelfreeError, unavailable
from labelfree.inference.postprocess import DEFAULT_THRESHOLD, categories_from_labels, to_detections
from labelfree.inference.preprocess import make_batch

RETRY_AFTER_S = 5
# Cap on gRPC messages: a 32-image batch at S=640 is ~39 MB.
GRPC_MAX_MESSAGE = 256 * 1024 * 1024


class RawDetections(NamedTuple):
    """Detector output for a batch: ``boxes`` (N, K, 4) float32 normalised xyxy,
    ``scores`` (N, K) float32, ``classes`` (N, K) int64."""

    boxes: np.ndarray
    scores: np.ndarray
    classes: np.ndarray


@dataclass(frozen=True)
class DetectorSpec:
    """What the pre/post-processing needs to know about a detector."""

    input_size: int
    categories: dict[str, str] = field(default_factory=lambda: {"1": "animal"})
    name: str = "labelfree-detector"
    threshold: float = DEFAULT_THRESHOLD
    category_ids: tuple[int, ...] | None = None  # class index -> MegaDetector id; None: index + 1

    @classmethod
    def from_dir(cls, det_dir: str | Path) -> "DetectorSpec":
        """Read ``manifest.json`` of a detector directory (``input_size``, ``labels``, ``name``)."""
        path = Path(det_dir) / "manifest.json"
        if not path.is_file():
            raise LabelfreeError("invalid", f"detector directory {det_dir} has no manifest.json")
        manifest = json.loads(path.read_text())
        size = manifest.get("input_size")
        if isinstance(size, (list, tuple)):
            size = size[0]
        if not isinstance(size, int) or size <= 0:
            raise LabelfreeError("invalid", f"{path}: input_size must be a positive int, got {size!r}")
        threshold = manifest.get("score_threshold", manifest.get("threshold", DEFAULT_THRESHOLD))
        ids = manifest.get("category_ids")
        try:
            categories = categories_from_labels(manifest.get("labels"), ids)
        except ValueError as exc:
            raise LabelfreeError("invalid", f"{path}: {exc}") from None
        return cls(input_size=size, categories=categories, name=str(manifest.get("name") or Path(det_dir).name),
                   threshold=float(threshold), category_ids=tuple(int(c) for c in ids) if ids else None)


class Backend(ABC):
    """Runs the detector graph on a uint8 ``(N, S, S, 3)`` batch."""

    name: str = "backend"

    @abstractmethod
    def infer(self, images: np.ndarray) -> RawDetections:
        """``images``: (N, S, S, 3) uint8 RGB. Raises LabelfreeError("unavailable") if unreachable."""

    @abstractmethod
    def check_ready(self) -> None:
        """Raise LabelfreeError("unavailable") unless the model can serve now."""

    def input_size(self) -> int | None:
        """S as the served model declares it, when the backend can tell."""
        return None

    def close(self) -> None:
        """Release connections or sessions."""


def _providers(choice: str) -> list[str]:
    import onnxruntime as ort

    available = ort.get_available_providers()
    if choice == "auto":
        return [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available]
    wanted = [p.strip() for p in choice.split(",") if p.strip()]
    missing = [p for p in wanted if p not in available]
    if missing:
        raise ValueError(f"onnx providers {missing} are not available; have {available}")
    return wanted


class OnnxRuntimeBackend(Backend):
    """The embedded profile: one ONNX Runtime session in this process (thread-safe ``run``)."""

    name = "onnxruntime"

    def __init__(self, model_path: str | Path, *, providers: str = "auto", intra_op_threads: int = 0,
                 max_concurrent_runs: int | None = None):
        """``max_concurrent_runs``: at most this many ``run`` calls at once (None = no limit).

        On CPU, one run at a time already uses every core; letting 16 request threads run
        at once only thrashes caches, while a gate lets their decoding overlap the one run.
        """
        import onnxruntime as ort

        path = Path(model_path)
        if path.is_dir():
            path = path / "model.onnx"
        if not path.is_file():
            raise LabelfreeError("invalid", f"detector model {path} does not exist")
        options = ort.SessionOptions()
        # 0 = one per core this process may run on (a container's cpuset, a taskset), not per host core.
        options.intra_op_num_threads = intra_op_threads or len(os.sched_getaffinity(0))
        # Idle ORT threads spin for a while by default, stealing the cores that decode the next
        # request and write the last response; a server sharing its cores must not spin.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = ort.InferenceSession(str(path), options, providers=_providers(providers))
        inputs = {i.name: i for i in self.session.get_inputs()}
        outputs = {o.name for o in self.session.get_outputs()}
        if "images" not in inputs or not {"boxes", "scores", "classes"} <= outputs:
            raise LabelfreeError("invalid", f"{path} is not a detector: inputs {list(inputs)}, outputs {sorted(outputs)}")
        self._size = inputs["images"].shape[1] if isinstance(inputs["images"].shape[1], int) else None
        self._gate = threading.BoundedSemaphore(max_concurrent_runs) if max_concurrent_runs else nullcontext()

    def infer(self, images: np.ndarray) -> RawDetections:
        with self._gate:
            boxes, scores, classes = self.session.run(["boxes", "scores", "classes"], {"images": images})
        return RawDetections(boxes, scores, classes.astype(np.int64, copy=False))

    def check_ready(self) -> None:
        return None  # a constructed session is ready

    def input_size(self) -> int | None:
        return self._size


def _is_connection_error(exc: Exception) -> bool:
    status = str(getattr(exc, "status", lambda: "")() or "")
    return any(s in status for s in ("UNAVAILABLE", "DEADLINE_EXCEEDED", "CANCELLED", "NOT_FOUND", "UNKNOWN"))


class TritonBackend(Backend):
    """A Triton server over KServe v2 gRPC.

    One client (one HTTP/2 channel) is reused across requests and threads. ``version`` pins
    the model version ("" = the server's latest ready one). Tensors travel as raw binary
    (``raw_input_contents``), never JSON. A short reconnect backoff lets the channel recover
    within a second or two of Triton coming back, with no restart of this process.
    """

    name = "triton"

    def __init__(self, url: str, model: str, version: str = "", *, timeout_s: float = 30.0,
                 ready_cache_s: float = 1.0):
        import tritonclient.grpc as grpcclient

        self.url, self.model, self.version, self.timeout_s = url, model, version or "", timeout_s
        self._grpc = grpcclient
        self._ready_cache_s = ready_cache_s
        self._ready_at = 0.0
        self.client = grpcclient.InferenceServerClient(url, channel_args=[
            ("grpc.max_send_message_length", GRPC_MAX_MESSAGE),
            ("grpc.max_receive_message_length", GRPC_MAX_MESSAGE),
            ("grpc.initial_reconnect_backoff_ms", 200),
            ("grpc.min_reconnect_backoff_ms", 200),
            ("grpc.max_reconnect_backoff_ms", 1000),
            ("grpc.keepalive_time_ms", 30_000),
            ("grpc.keepalive_timeout_ms", 5_000),
        ])
        self._max_batch: int | None = None

    def _unavailable(self, what: str, exc: Exception | None = None) -> LabelfreeError:
        reason = f": {exc}" if exc else ""
        version = self.version or "latest"
        return unavailable(f"Triton at {self.url} {what} (model {self.model} version {version}){reason}"[:500],
                           retry_after=RETRY_AFTER_S)

    def check_ready(self) -> None:
        from tritonclient.utils import InferenceServerException

        if time.monotonic() - self._ready_at < self._ready_cache_s:
            return
        try:
            live = self.client.is_server_live(client_timeout=2.0)
            ready = live and self.client.is_model_ready(self.model, self.version, client_timeout=2.0)
        except InferenceServerException as exc:
            raise self._unavailable("is unreachable", exc) from None
        if not live:
            raise self._unavailable("is not live")
        if not ready:
            raise self._unavailable("has the model not ready")
        self._ready_at = time.monotonic()

    def _metadata(self) -> dict:
        from tritonclient.utils import InferenceServerException

        try:
            return self.client.get_model_metadata(self.model, self.version, as_json=True, client_timeout=5.0)
        except InferenceServerException as exc:
            raise self._unavailable("gave no model metadata", exc) from None

    def input_size(self) -> int | None:
        for tensor in self._metadata().get("inputs", []):
            if tensor.get("name") == "images":
                dim = int(tensor["shape"][1])
                return dim if dim > 0 else None
        return None

    def max_batch(self) -> int:
        """The served model's ``max_batch_size`` (requests above it are split)."""
        if self._max_batch is None:
            from tritonclient.utils import InferenceServerException

            try:
                config = self.client.get_model_config(self.model, self.version, as_json=True, client_timeout=5.0)
            except InferenceServerException as exc:
                raise self._unavailable("gave no model config", exc) from None
            self._max_batch = int(config.get("config", {}).get("max_batch_size", 0)) or 1
        return self._max_batch

    def _infer_once(self, images: np.ndarray) -> RawDetections:
        from tritonclient.utils import InferenceServerException

        tensor = self._grpc.InferInput("images", list(images.shape), "UINT8")
        tensor.set_data_from_numpy(np.ascontiguousarray(images))
        outputs = [self._grpc.InferRequestedOutput(n) for n in ("boxes", "scores", "classes")]
        try:
            result = self.client.infer(self.model, [tensor], model_version=self.version, outputs=outputs,
                                       client_timeout=self.timeout_s)
        except InferenceServerException as exc:
            self._ready_at = 0.0
            if _is_connection_error(exc):
                raise self._unavailable("failed the request", exc) from None
            raise LabelfreeError("unavailable", f"Triton rejected the request: {exc}"[:500],
                                 retry_after=RETRY_AFTER_S) from None
        return RawDetections(result.as_numpy("boxes"), result.as_numpy("scores"),
                             result.as_numpy("classes").astype(np.int64, copy=False))

    def infer(self, images: np.ndarray) -> RawDetections:
        limit = self.max_batch()
        if len(images) <= limit:
            return self._infer_once(images)
        parts = [self._infer_once(images[i:i + limit]) for i in range(0, len(images), limit)]
        return RawDetections(*(np.concatenate([getattr(p, f) for p in parts]) for f in RawDetections._fields))

    def close(self) -> None:
        self.client.close()


class Detector:
    """Backend + the shared pre/post-processing: photos in, MegaDetector detections out."""

    def __init__(self, backend: Backend, spec: DetectorSpec):
        self.backend = backend
        self.spec = spec

    def detect(self, images: Sequence[Image.Image | np.ndarray], *,
               threshold: float | None | Sequence[float | None] = None) -> list[list[dict]]:
        """Detections per image (``conf >= threshold``, highest first), bbox normalised xywh.

        ``threshold``: one for every image, or one per image (a batch of separate requests);
        None is the detector's own threshold."""
        batch = make_batch(images, self.spec.input_size)
        raw = self.backend.infer(batch)
        each = threshold if isinstance(threshold, Sequence) else [threshold] * len(images)
        return [to_detections(raw.boxes[i], raw.scores[i], raw.classes[i],
                              threshold=self.spec.threshold if thr is None else thr,
                              category_ids=self.spec.category_ids) for i, thr in enumerate(each)]

    def close(self) -> None:
        self.backend.close()


def make_backend(kind: str, *, detector_dir: Path | None, triton_url: str = "", triton_model: str = "",
                 triton_version: str = "", onnx_providers: str = "auto", onnx_threads: int = 0) -> Backend:
    """Build the configured backend (``kind``: ``onnxruntime`` or ``triton``)."""
    if kind == "onnxruntime":
        if detector_dir is None:
            raise LabelfreeError("unavailable", "no detector deployed: set LABELFREE_DETECTOR_DIR")
        # Serving on CPU: one run at a time (measured in bench/results/inference.md).
        return OnnxRuntimeBackend(detector_dir, providers=onnx_providers, intra_op_threads=onnx_threads,
                                  max_concurrent_runs=1 if _providers(onnx_providers) == ["CPUExecutionProvider"] else None)
    if kind == "triton":
        return TritonBackend(triton_url, triton_model, triton_version)
    raise ValueError(f"unknown inference backend {kind!r}; expected onnxruntime or triton")


def make_detector(backend: Backend, detector_dir: Path | None) -> Detector:
    """Pair a backend with its spec: from the manifest when there is one, else from the served model."""
    if detector_dir is not None:
        return Detector(backend, DetectorSpec.from_dir(detector_dir))
    size = backend.input_size()
    if size is None:
        raise LabelfreeError("invalid", "cannot tell the detector input size: no manifest and no fixed input shape")
    return Detector(backend, DetectorSpec(input_size=size))
