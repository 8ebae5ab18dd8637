"""explainer.model: the PyTorch rebuild of a MODEL_DIR gives the ONNX graph's outputs."""

from __future__ import annotations

import json

import numpy as np
import pytest

from labelfree.core.backbone import load_backbone
from labelfree.core.errors import LabelfreeError
from labelfree.explainer.model import OnnxClassifier, TorchClassifier, load_classifier
from labelfree.trainer.export import export_classifier


@pytest.fixture(scope="module")
def lite0_model_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("lite0_model")
    net = load_backbone("efficientnet-lite0")
    coef = np.random.default_rng(1).normal(0, 0.05, 1280)
    export_classifier(net, coef, -0.3, path / "model.onnx")
    (path / "manifest.json").write_text(json.dumps(
        {"backbone": net.name, "backbone_version": net.version, "input_size": 224, "threshold": 0.5}))
    return path


def test_torch_rebuild_matches_onnx_on_every_output(lite0_model_dir):
    images = np.random.default_rng(0).integers(0, 256, (3, 224, 224, 3), dtype=np.uint8)
    onnx_model = OnnxClassifier(lite0_model_dir)
    torch_model = TorchClassifier(lite0_model_dir, device="cpu")
    got, want = torch_model.run(images), onnx_model.run(images)
    for name in ("score", "logit", "cam"):
        np.testing.assert_allclose(got[name], want[name], atol=1e-4, rtol=1e-4)
    np.testing.assert_allclose(torch_model.logit(images), onnx_model.logit(images), atol=1e-4, rtol=1e-4)
    fine = images[:1].repeat(2, axis=1).repeat(2, axis=2)  # 448: the foreground method's features
    np.testing.assert_allclose(torch_model.features(fine), onnx_model.features(fine), atol=1e-3, rtol=1e-3)
    (coarse_t, fine_t), (coarse_o, fine_o) = torch_model.taps(fine), onnx_model.taps(fine)
    assert fine_o.shape == (1, 112, 28, 28) and coarse_o.shape == (1, 320, 14, 14)  # stride 16 and 32 at 448
    np.testing.assert_allclose(fine_t, fine_o, atol=1e-3, rtol=1e-3)


def test_torch_rebuild_refuses_other_backbone_weights(lite0_model_dir, tmp_path):
    manifest = json.loads((lite0_model_dir / "manifest.json").read_text())
    manifest["backbone_version"] = "efficientnet-lite0@0000"
    (tmp_path / "model.onnx").write_bytes((lite0_model_dir / "model.onnx").read_bytes())
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(LabelfreeError, match="backbone weights"):
        TorchClassifier(tmp_path, device="cpu")


def test_load_classifier_picks_onnx_runtime_without_a_gpu(lite0_model_dir):
    assert isinstance(load_classifier(lite0_model_dir, device="cpu"), OnnxClassifier)
    assert isinstance(load_classifier(lite0_model_dir), (OnnxClassifier, TorchClassifier))
    with pytest.raises(ValueError, match="device must be"):
        load_classifier(lite0_model_dir, device="tpu")


def test_torch_lime_composes_on_its_device_with_the_same_scores(lite0_model_dir):
    from labelfree.explainer.lime import explain

    rng = np.random.default_rng(3)
    image = rng.integers(0, 256, (224, 224, 3), dtype=np.uint8)
    torch_model = TorchClassifier(lite0_model_dir, device="cpu")
    predict = torch_model.lime_predict
    assert hasattr(predict, "score_masks")
    own = explain(image, predict, rng=np.random.default_rng(0), n_samples=24, batch_size=10)
    generic = explain(image, torch_model.logit, rng=np.random.default_rng(0), n_samples=24, batch_size=10)
    onnx = explain(image, OnnxClassifier(lite0_model_dir).lime_predict, rng=np.random.default_rng(0), n_samples=24)
    np.testing.assert_allclose(own.weights, generic.weights, atol=1e-4)
    np.testing.assert_allclose(own.weights, onnx.weights, atol=1e-3)
    assert own.base_score == pytest.approx(onnx.base_score, abs=1e-3)
