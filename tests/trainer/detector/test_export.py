import numpy as np
import onnx
import pytest
import torch

from labelfree.trainer.detector.export import check_onnx, make_session, triton_config
from labelfree.trainer.detector.train import TrainConfig
from tests.trainer.detector.conftest import SIZE

_ONNX_TO_TRITON = {onnx.TensorProto.UINT8: "TYPE_UINT8", onnx.TensorProto.FLOAT: "TYPE_FP32",
                   onnx.TensorProto.INT64: "TYPE_INT64"}


def _load_detector(det_dir, config: TrainConfig):
    from labelfree.core.backbone import load_backbone
    from labelfree.trainer.detector.model import Detector

    detector = Detector(load_backbone(config.backbone), 1, width=config.width, head_depth=config.head_depth,
                        out_stride=config.out_stride)
    # the weights the build exported: the last round's final average (``keep="last"``, the default)
    state = torch.load(det_dir / "checkpoints" / "last.pt", weights_only=False)
    detector.load_state_dict(state["ema"] if config.ema else state["model"])
    return detector.eval()


def test_onnx_matches_pytorch(trained):
    detector = _load_detector(trained["dir"], trained["config"])
    images = np.random.default_rng(0).integers(0, 256, (3, SIZE, SIZE, 3), dtype=np.uint8)
    calibration = trained["manifest"]["training"]["score_calibration"]
    affine = (calibration["scale"], calibration["bias"]) if calibration["fitted"] else (1.0, 0.0)
    assert check_onnx(detector, trained["dir"] / "model_fp32.onnx", images, top_k=20, score_affine=affine) < 1e-3
    assert trained["manifest"]["onnx_check_max_abs_diff"] < 1e-3


def test_onnx_check_catches_a_different_network(trained):
    detector = _load_detector(trained["dir"], trained["config"])
    with torch.no_grad():
        for p in detector.head_parameters():
            p.mul_(1.5)  # what a stale or mis-exported graph looks like: the same shapes, other outputs
    images = np.random.default_rng(0).integers(0, 256, (3, SIZE, SIZE, 3), dtype=np.uint8)
    with pytest.raises(RuntimeError, match="without a twin"):
        check_onnx(detector, trained["dir"] / "model_fp32.onnx", images, top_k=20, floor=0.0)


def test_export_output_shapes_are_fixed(trained):
    model = onnx.load(str(trained["dir"] / "model.onnx"))
    dims = {o.name: [d.dim_value or d.dim_param for d in o.type.tensor_type.shape.dim] for o in model.graph.output}
    assert dims["boxes"][1:] == [20, 4] and dims["scores"][1:] == [20] and dims["classes"][1:] == [20]
    session = make_session(trained["dir"] / "model.onnx")
    for n in (1, 5):
        boxes, scores, classes = session.run(None, {"images": np.zeros((n, SIZE, SIZE, 3), np.uint8)})
        assert boxes.shape == (n, 20, 4) and scores.shape == (n, 20) and classes.shape == (n, 20)
        assert boxes.dtype == np.float32 and classes.dtype == np.int64
        assert (boxes >= 0).all() and (boxes <= 1).all()
        assert (np.diff(scores, axis=1) <= 0).all()


def test_triton_config_matches_the_exported_model(trained):
    model_config_pb2 = pytest.importorskip("tritonclient.grpc.model_config_pb2", reason="tritonclient not installed")
    from google.protobuf import text_format

    repo = trained["dir"] / "triton" / "labelfree_detector"
    config = text_format.Parse((repo / "config.pbtxt").read_text(), model_config_pb2.ModelConfig())
    graph = onnx.load(str(repo / "1" / "model.onnx")).graph
    assert config.name == "labelfree_detector" and config.platform == "onnxruntime_onnx"
    assert config.max_batch_size >= 1 and config.HasField("dynamic_batching")
    assert config.instance_group[0].kind == model_config_pb2.ModelInstanceGroup.KIND_CPU
    for declared, actual in ((config.input, graph.input), (config.output, graph.output)):
        assert [t.name for t in declared] == [t.name for t in actual]
        for t, g in zip(declared, actual):
            dtype = model_config_pb2.DataType.Name(t.data_type)
            assert dtype == _ONNX_TO_TRITON[g.type.tensor_type.elem_type], t.name
            assert list(t.dims) == [d.dim_value for d in g.type.tensor_type.shape.dim][1:], t.name


def test_triton_config_gpu_kind_and_bad_kind():
    assert "kind: KIND_GPU" in triton_config(input_size=256, top_k=100, instance_kind="gpu")
    with pytest.raises(ValueError, match="tpu"):
        triton_config(input_size=256, top_k=100, instance_kind="tpu")
