"""Static int8 quantisation of the exported detector graph (ONNX Runtime, QDQ format).

The quantised graph keeps the fp32 graph's contract (:mod:`export`): uint8 ``(N, S, S, 3)``
in, fixed top-K ``boxes`` / ``scores`` / ``classes`` out, preprocessing and decoding inside.
Only the network's convolutions (and the adds, pads and upsamples between them) become int8:

- preprocessing (``(x - 127) / 128``) and the decoding (sigmoid, max-pool peak test, top-K,
  box gather) stay fp32: the peak test compares a cell with its neighbours for *equality*,
  and 256 activation levels would turn near-equal neighbours into ties (duplicate peaks);
- the last 1x1 convolution of each head tower stays fp32, so heat logits and box edges are
  not rounded to 256 levels (they are two tiny convs; the cost is nil).

Activations are uint8 asymmetric, weights int8 per output channel (EfficientNet-Lite's
depthwise convs lose too much with one scale per tensor); ranges are the min/max seen on
calibration images, which should be a few hundred training images stretched to ``S x S``.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Iterator

import numpy as np

# The ops that run as int8 when both neighbours are int8 (QDQ pairs around them).
QUANTIZED_OPS = ("Conv", "Add", "Pad", "Resize", "Clip", "Relu")
# Node-name prefix of the network inside the exported graph (ExportModel.detector).
NETWORK_PREFIX = "/detector/"


class _Batches:
    """ONNX Runtime CalibrationDataReader over uint8 ``(M, S, S, 3)`` images, ``batch_size`` at a time."""

    def __init__(self, images: np.ndarray, batch_size: int):
        self._iter: Iterator[dict] = ({"images": images[i:i + batch_size]}
                                      for i in range(0, len(images), batch_size))

    def get_next(self) -> dict | None:
        return next(self._iter, None)


def _head_outputs(model) -> set[str]:
    """Names of the convs whose outputs leave the network (heat logits and ltrb before softplus)."""
    consumers: dict[str, list] = {}
    for node in model.graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    last = set()
    for node in model.graph.node:
        if node.op_type != "Conv" or not node.name.startswith(NETWORK_PREFIX):
            continue
        users = consumers.get(node.output[0], [])
        # A head output feeds nodes outside the network (decode) or the softplus of the ltrb tower.
        if any(not u.name.startswith(NETWORK_PREFIX) or u.op_type == "Softplus" for u in users):
            last.add(node.name)
    return last


def quantize_detector(fp32_path: str | Path, out_path: str | Path, calibration: np.ndarray, *,
                      batch_size: int = 16, per_channel: bool = True) -> dict:
    """Write the int8 QDQ graph of ``fp32_path`` to ``out_path``; returns what was done (for the manifest).

    ``calibration``: uint8 ``(M, S, S, 3)``, the graph's own input, M >= 1 (a few hundred
    training images is plenty). Raises ValueError on a wrong calibration array.
    """
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    calibration = np.asarray(calibration)
    if calibration.dtype != np.uint8 or calibration.ndim != 4 or calibration.shape[-1] != 3 or not len(calibration):
        raise ValueError(f"calibration must be uint8 (M, S, S, 3) with M >= 1, got {calibration.dtype} "
                         f"{calibration.shape}")
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        # Shape inference + constant folding first (ORT's recommended pre-pass): the backbone's
        # TF-style padding is computed by a chain of shape ops that folds to constants here.
        prepared = Path(tmp) / "prepared.onnx"
        quant_pre_process(str(fp32_path), str(prepared), skip_symbolic_shape=True)
        model = onnx.load(str(prepared))
        exclude = sorted(_head_outputs(model))
        outside = [n.name for n in model.graph.node if not n.name.startswith(NETWORK_PREFIX)]
        quantize_static(str(prepared), str(out_path), _Batches(calibration, batch_size),
                        quant_format=QuantFormat.QDQ, op_types_to_quantize=list(QUANTIZED_OPS),
                        per_channel=per_channel, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        nodes_to_exclude=exclude + outside, calibrate_method=CalibrationMethod.MinMax,
                        extra_options={"CalibTensorRangeSymmetric": False})
    _copy_output_shapes(fp32_path, out_path)
    return {"format": "QDQ", "activations": "uint8 asymmetric", "weights": "int8 per-channel" if per_channel
            else "int8 per-tensor", "calibration": "min/max", "n_calibration_images": int(len(calibration)),
            "ops": list(QUANTIZED_OPS), "fp32_kept": ["preprocessing", "decode"] + exclude}


def _copy_output_shapes(source: str | Path, target: str | Path) -> None:
    """Give the quantised graph the source graph's declared input/output shapes (fixed K)."""
    import onnx

    src, dst = onnx.load(str(source)), onnx.load(str(target))
    shapes = {v.name: v.type for v in list(src.graph.input) + list(src.graph.output)}
    for value in list(dst.graph.input) + list(dst.graph.output):
        if value.name not in shapes:
            raise RuntimeError(f"quantised graph has an unexpected input/output {value.name!r}")
        value.type.CopyFrom(shapes[value.name])
    onnx.checker.check_model(dst)
    onnx.save(dst, str(target))


def compare_graphs(reference: str | Path, candidate: str | Path, images: np.ndarray, *,
                   threads: int | None = None) -> dict[str, float]:
    """How far ``candidate`` (e.g. the int8 graph) is from ``reference`` on uint8 ``images``.

    Returns the max and mean |score difference| of the top slot and the mean IoU of the two
    graphs' top boxes. Scores and boxes cannot match to 1e-3 after quantisation; these say
    whether the detections survived (a broken quantisation gives top-box IoU near 0).
    """
    from labelfree.trainer.detector.boxops import box_iou
    from labelfree.trainer.detector.export import OUTPUTS, make_session

    want = make_session(reference, threads=threads).run(list(OUTPUTS), {"images": images})
    got = make_session(candidate, threads=threads).run(list(OUTPUTS), {"images": images})
    for name, w, g in zip(OUTPUTS, want, got):
        if w.shape != g.shape or w.dtype != g.dtype:
            raise RuntimeError(f"{candidate}: output {name} is {g.dtype} {g.shape}, reference {w.dtype} {w.shape}")
    top_diff = np.abs(got[1][:, 0] - want[1][:, 0])
    ious = [float(box_iou(w[:1].astype(np.float64), g[:1].astype(np.float64))[0, 0])
            for w, g in zip(want[0], got[0])]
    return {"top_score_max_abs_diff": float(top_diff.max()), "top_score_mean_abs_diff": float(top_diff.mean()),
            "top_box_mean_iou": float(np.mean(ious))}
