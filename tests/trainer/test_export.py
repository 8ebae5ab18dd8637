"""trainer.export: the one classifier graph agrees with PyTorch and keeps its contract."""

from __future__ import annotations

import numpy as np
import onnx
import torch

from labelfree.core.backbone import load_backbone
from labelfree.trainer.export import ClassifierGraph, export_classifier
from labelfree.trainer.featurize import make_session


def test_classifier_graph_matches_pytorch_and_cam_averages_to_logit(tmp_path):
    rng = np.random.default_rng(0)
    net = load_backbone("efficientnet-lite0")
    coef, intercept = rng.normal(0, 0.05, 1280), -0.3
    path = tmp_path / "model.onnx"
    diff = export_classifier(net, coef, intercept, path)
    assert diff <= 1e-4

    graph = onnx.load(str(path)).graph
    assert [i.name for i in graph.input] == ["images"] and [o.name for o in graph.output] == ["score", "logit", "cam"]
    assert graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.UINT8

    session = make_session(path)
    images = rng.integers(0, 256, (2, 192, 320, 3), dtype=np.uint8)  # dynamic H, W
    score, logit, cam = session.run(None, {"images": images})
    assert score.shape == (2,) and logit.shape == (2,) and cam.shape == (2, 6, 10)
    np.testing.assert_allclose(cam.mean((1, 2)), logit, atol=1e-5)
    np.testing.assert_allclose(score, 1 / (1 + np.exp(-logit)), atol=1e-6)
    with torch.no_grad():
        want = ClassifierGraph(net, coef, intercept)(torch.from_numpy(images))
    for got, ref in zip((score, logit, cam), want):
        np.testing.assert_allclose(got, ref.numpy(), atol=1e-4)
    # The head is linear in the pooled features: logit == coef . mean(fmap) + b.
    with torch.no_grad():
        pooled = net((torch.from_numpy(images).float() - 127).div(128).permute(0, 3, 1, 2)).mean((2, 3)).numpy()
    np.testing.assert_allclose(logit, pooled @ coef + intercept, atol=1e-4)
