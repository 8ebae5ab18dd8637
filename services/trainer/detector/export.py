"""Export the detector: ONE ONNX graph with decoding inside, checked against PyTorch, plus a
Triton model repository and the DET_DIR manifest.

Graph contract (DET_DIR/model.onnx):
- input ``images``: uint8 ``(N, S, S, 3)`` RGB, N dynamic, S fixed (manifest ``input_size``);
  callers stretch each image to ``S x S``; ``(x - 127) / 128`` and NHWC->NCHW happen inside;
- ``boxes`` float32 ``(N, K, 4)`` normalised xyxy in [0, 1]; ``scores`` float32 ``(N, K)``
  sorted descending; ``classes`` int64 ``(N, K)`` class index into the manifest ``labels``.
  K is fixed (``top_k``); low-scoring slots are padding, so callers apply a threshold.
"""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

import numpy as np
import torch

from labelfree.trainer.detector.model import Detector, ExportModel

FORMAT = "labelfree.detector"
FORMAT_VERSION = "1.0"
TRITON_NAME = "labelfree_detector"
OUTPUTS = ("boxes", "scores", "classes")
INSTANCE_KINDS = {"cpu": "KIND_CPU", "gpu": "KIND_GPU"}


def export_onnx(detector: Detector, path: str | Path, *, input_size: int, top_k: int = 100,
                pool_kernel: int = 3, opset: int = 17, score_affine: tuple[float, float] = (1.0, 0.0)) -> Path:
    """Write the deployed graph (see module docstring) to ``path``; batch axis dynamic."""
    if input_size % 32:
        raise ValueError(f"input_size must be a multiple of 32, got {input_size}")
    graph = ExportModel(detector.eval(), top_k, pool_kernel, score_affine).eval()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    example = torch.zeros((1, input_size, input_size, 3), dtype=torch.uint8)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(graph, (example,), str(path), input_names=["images"], output_names=list(OUTPUTS),
                          dynamic_axes={name: {0: "N"} for name in ("images",) + OUTPUTS},
                          opset_version=opset, dynamo=False)
    _declare_output_shapes(path, top_k)
    return path


def _declare_output_shapes(path: Path, top_k: int) -> None:
    """Write the fixed K (and 4) into the graph's declared output shapes.

    The exporter leaves them symbolic (it cannot see through TopK/Gather); servers such as
    Triton and callers reading the graph should see ``(N, K, 4)``, ``(N, K)``, ``(N, K)``.
    """
    import onnx

    model = onnx.load(str(path))
    fixed = {"boxes": ("N", top_k, 4), "scores": ("N", top_k), "classes": ("N", top_k)}
    for output in model.graph.output:
        dims = output.type.tensor_type.shape.dim
        del dims[:]
        for value in fixed[output.name]:
            dim = dims.add()
            if isinstance(value, int):
                dim.dim_value = value
            else:
                dim.dim_param = value
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


def make_session(path: str | Path, *, threads: int | None = None, gpu: bool = False, spin: bool = False):
    """An ONNX Runtime session; ``threads`` bounds intra-op threads (None: ORT's default).

    ``spin=False`` stops idle worker threads busy-waiting: on a shared machine spinning
    threads steal the cores the other threads need.
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    if not spin:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    providers = ["CPUExecutionProvider"]
    if gpu and "CUDAExecutionProvider" in ort.get_available_providers():
        providers.insert(0, "CUDAExecutionProvider")
    return ort.InferenceSession(str(path), options, providers=providers)


def check_onnx(detector: Detector, path: str | Path, images: np.ndarray, *, top_k: int = 100,
               pool_kernel: int = 3, atol: float = 1e-3, floor: float = 0.05,
               score_affine: tuple[float, float] = (1.0, 0.0)) -> float:
    """Worst |ONNX - PyTorch| over matched detections; raises when they disagree.

    ``images``: uint8 ``(N, S, S, 3)``. Every detection scoring >= ``floor`` in one runtime must
    have a twin in the other: same class, score and box within ``atol``. Slots are matched, not
    compared in order: two neighbouring cells whose heat differs by float rounding can swap which
    one is the peak, which shifts every lower slot of the top-K list by one (for a detector trained
    end to end, compared slot by slot, neighbouring low scores then differ by ~5e-3 while every box
    agrees to 2e-7).
    Raises RuntimeError when a detection has no twin or the output shapes are off.
    """
    session = make_session(path)
    got = session.run(list(OUTPUTS), {"images": images})
    with torch.no_grad():
        graph = ExportModel(detector.eval(), top_k, pool_kernel, score_affine)
        want = [t.numpy() for t in graph(torch.from_numpy(images))]
    for name, array, shape in zip(OUTPUTS, got, ((top_k, 4), (top_k,), (top_k,))):
        if array.shape[1:] != shape:
            raise RuntimeError(f"ONNX output {name} has shape {array.shape}, expected (N, {shape})")
    worst, missing = 0.0, []
    for i in range(len(images)):
        for name, a, b in (("PyTorch", want, got), ("ONNX", got, want)):
            keep = a[1][i] >= floor
            # (kept, K) distance of each kept detection of a to every slot of b
            dist = np.maximum(np.abs(a[0][i][keep][:, None] - b[0][i][None]).max(-1),
                              np.abs(a[1][i][keep][:, None] - b[1][i][None]))
            dist[a[2][i][keep][:, None] != b[2][i][None]] = np.inf
            nearest = dist.min(1) if dist.size else np.zeros(0)
            missing += [f"image {i}: {name} score {v:.3f}" for v in a[1][i][keep][nearest > atol]]
            worst = max([worst, *nearest[nearest <= atol].tolist()])
    if missing:
        raise RuntimeError(f"ONNX and PyTorch disagree: {len(missing)} detections >= {floor} without a twin "
                           f"within {atol:.0e} ({', '.join(missing[:3])})")
    return worst


def triton_config(*, input_size: int, top_k: int, max_batch_size: int = 32, instance_kind: str = "cpu",
                  instance_count: int = 1, preferred_batch_sizes: tuple[int, ...] = (8, 16, 32),
                  max_queue_delay_us: int = 2000, name: str = TRITON_NAME) -> str:
    """``config.pbtxt`` text for the exported graph; dims exclude the batch axis (``max_batch_size`` > 0)."""
    if instance_kind not in INSTANCE_KINDS:
        raise ValueError(f"instance_kind {instance_kind!r} not in {sorted(INSTANCE_KINDS)}")
    if max_batch_size < 1 or instance_count < 1:
        raise ValueError(f"max_batch_size and instance_count must be >= 1, got {max_batch_size}, {instance_count}")
    preferred = sorted({b for b in preferred_batch_sizes if 1 <= b <= max_batch_size}) or [max_batch_size]
    return "\n".join([
        f'name: "{name}"',
        'platform: "onnxruntime_onnx"',
        f"max_batch_size: {max_batch_size}",
        "input [",
        f'  {{ name: "images" data_type: TYPE_UINT8 dims: [ {input_size}, {input_size}, 3 ] }}',
        "]",
        "output [",
        f'  {{ name: "boxes" data_type: TYPE_FP32 dims: [ {top_k}, 4 ] }},',
        f'  {{ name: "scores" data_type: TYPE_FP32 dims: [ {top_k} ] }},',
        f'  {{ name: "classes" data_type: TYPE_INT64 dims: [ {top_k} ] }}',
        "]",
        "dynamic_batching {",
        f"  preferred_batch_size: [ {', '.join(str(b) for b in preferred)} ]",
        f"  max_queue_delay_microseconds: {max_queue_delay_us}",
        "}",
        f"instance_group [ {{ count: {instance_count} kind: {INSTANCE_KINDS[instance_kind]} }} ]",
        "",
    ])


def write_triton_repository(onnx_path: str | Path, repository: str | Path, *, input_size: int, top_k: int,
                            instance_kind: str = "cpu", max_batch_size: int = 32, instance_count: int = 1,
                            name: str = TRITON_NAME, version: int = 1) -> Path:
    """Write ``repository/<name>/config.pbtxt`` and ``repository/<name>/<version>/model.onnx``."""
    model_dir = Path(repository) / name
    (model_dir / str(version)).mkdir(parents=True, exist_ok=True)
    shutil.copyfile(onnx_path, model_dir / str(version) / "model.onnx")
    (model_dir / "config.pbtxt").write_text(triton_config(
        input_size=input_size, top_k=top_k, max_batch_size=max_batch_size, instance_kind=instance_kind,
        instance_count=instance_count, name=name))
    return model_dir


def build_manifest(detector: Detector, *, input_size: int, top_k: int, pool_kernel: int, labels: list[str],
                   category_ids: list[int], training: dict, metrics: dict, onnx_check_max_abs_diff: float,
                   code_version: str, triton: dict, precision: dict | None = None) -> dict:
    """The DET_DIR manifest: how to feed the graph, what comes out, and where it came from.

    ``precision``: ``{"precision": "fp32" | "int8", ...}`` for the deployed ``model.onnx``
    (int8 adds how it was quantised and how far it is from ``model_fp32.onnx``).
    """
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "kind": "detector",
        "backbone": detector.backbone.name,
        "backbone_version": detector.backbone.version,
        "architecture": {"neck": "fpn", "head": "centernet/ttfnet (heat + ltrb)", "out_stride": detector.out_stride,
                         "num_classes": detector.num_classes, "decode": f"max-pool {pool_kernel}x{pool_kernel} peaks, top-{top_k}"},
        "input_size": input_size,
        "top_k": top_k,
        "inputs": [{"name": "images", "dtype": "uint8", "shape": ["N", input_size, input_size, 3], "layout": "NHWC",
                    "channels": "RGB"}],
        "outputs": [
            {"name": "boxes", "dtype": "float32", "shape": ["N", top_k, 4], "meaning": "normalised xyxy in [0, 1]"},
            {"name": "scores", "dtype": "float32", "shape": ["N", top_k], "meaning": "confidence, descending"},
            {"name": "classes", "dtype": "int64", "shape": ["N", top_k], "meaning": "index into labels"},
        ],
        "preprocessing": {
            "outside_graph": f"decode, apply EXIF orientation, convert to RGB, stretch to {input_size}x{input_size} "
                             "with bilinear resampling (PIL Image.BILINEAR), uint8 NHWC",
            "inside_graph": "x = (float(x) - 127) / 128; NHWC -> NCHW",
            "resize": "stretch", "interpolation": "bilinear",
        },
        "labels": labels,
        "category_ids": category_ids,
        "training": training,
        "metrics": metrics,
        "onnx_check_max_abs_diff": onnx_check_max_abs_diff,
        **(precision or {"precision": "fp32"}),
        "triton": triton,
        "code_version": code_version,
    }


def write_json(path: str | Path, obj: dict) -> None:
    Path(path).write_text(json.dumps(obj, indent=2) + "\n")
