import numpy as np
import onnx
import pytest

from labelfree.trainer.detector.export import make_session
from labelfree.trainer.detector.quantize import compare_graphs, quantize_detector
from tests.trainer.detector.conftest import SIZE


def _positives(synthetic) -> tuple[np.ndarray, list[np.ndarray]]:
    """uint8 (M, S, S, 3) images holding objects and their truth boxes, normalised xyxy."""
    from labelfree.core.images import load_rgb
    from labelfree.trainer.detector.data import stretch_resize

    names = [n for n, boxes in synthetic["truths"].items() if len(boxes)]
    images = np.stack([stretch_resize(load_rgb(synthetic["images"] / n), SIZE) for n in names])
    return images, [np.asarray(synthetic["truths"][n], np.float64) / SIZE for n in names]


def _recall(path, images: np.ndarray, truths: list[np.ndarray], top: int = 5) -> float:
    from labelfree.trainer.detector.boxops import box_iou

    boxes = make_session(path).run(["boxes"], {"images": images})[0]
    found = [box_iou(t, b[:top]).max(axis=1) >= 0.5 for t, b in zip(truths, boxes)]
    return float(np.concatenate(found).mean())


def test_deployed_graph_is_int8_and_keeps_the_contract(trained):
    manifest = trained["manifest"]
    assert manifest["precision"] == "int8" and manifest["quantization"]["format"] == "QDQ"
    graph = onnx.load(str(trained["dir"] / "model.onnx")).graph
    ops = {n.op_type for n in graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    # Decoding stays in the graph: the peak test and the fixed top-K.
    assert {"MaxPool", "TopK", "Sigmoid"} <= ops
    assert graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.UINT8
    dims = {o.name: [d.dim_value or d.dim_param for d in o.type.tensor_type.shape.dim] for o in graph.output}
    assert dims == {"boxes": ["N", 20, 4], "scores": ["N", 20], "classes": ["N", 20]}
    session = make_session(trained["dir"] / "model.onnx")
    boxes, scores, classes = session.run(None, {"images": np.zeros((3, SIZE, SIZE, 3), np.uint8)})
    assert boxes.shape == (3, 20, 4) and scores.shape == (3, 20) and classes.shape == (3, 20)
    assert boxes.dtype == np.float32 and scores.dtype == np.float32 and classes.dtype == np.int64


def test_int8_graph_finds_the_same_objects_as_fp32(trained, synthetic):
    images, truths = _positives(synthetic)
    fp32 = _recall(trained["dir"] / "model_fp32.onnx", images, truths)
    assert fp32 >= 0.75  # the overfit fp32 model finds its blobs; int8 must keep them
    assert _recall(trained["dir"] / "model.onnx", images, truths) >= fp32 - 0.1
    agreement = compare_graphs(trained["dir"] / "model_fp32.onnx", trained["dir"] / "model.onnx", images)
    # This overfit model's top scores sit at 0.4-0.7, where int8 moves them most; one of six photos
    # moved 0.16 on an AMD CPU (0.06 on average). A broken quantisation moves boxes, not just scores.
    assert agreement["top_score_mean_abs_diff"] < 0.1 and agreement["top_score_max_abs_diff"] < 0.25
    assert agreement["top_box_mean_iou"] >= 0.7


def test_triton_copy_is_the_deployed_int8_graph(trained):
    repo = trained["dir"] / "triton" / "labelfree_detector" / "1" / "model.onnx"
    assert repo.read_bytes() == (trained["dir"] / "model.onnx").read_bytes()


def test_quantize_rejects_float_calibration(trained, tmp_path):
    with pytest.raises(ValueError, match="uint8"):
        quantize_detector(trained["dir"] / "model_fp32.onnx", tmp_path / "q.onnx",
                          np.zeros((2, SIZE, SIZE, 3), np.float32))


def test_gpu_instance_kind_deploys_the_fp32_graph(synthetic, tmp_path):
    from labelfree.trainer.detector.build import build_detector
    from labelfree.trainer.detector.train import TrainConfig

    # 64 px at stride 8 has 64 cells: also checks that self-training relabels with the config's top_k.
    config = TrainConfig(input_size=64, epochs=1, min_steps=0, batch_size=4, val_fraction=0.0, augment=False, top_k=16,
                         max_steps=1)
    manifest = build_detector(synthetic["images"], synthetic["boxes"], tmp_path, config=config,
                              show_progress=False, self_train_rounds=1, instance_kind="gpu", soft_candidates=True)
    assert manifest["precision"] == "fp32" and "quantization" not in manifest
    assert manifest["training"]["soft_candidates"] is True  # the soft relabel round ran too
    assert (tmp_path / "model.onnx").read_bytes() == (tmp_path / "model_fp32.onnx").read_bytes()
