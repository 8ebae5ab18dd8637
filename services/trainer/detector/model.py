"""Anchor-free detector: pretrained backbone, small FPN neck, CenterNet/TTFNet-style head.

Tensor conventions:
- The network input is float32 ``(N, 3, S, S)`` normalised as ``(x - 127) / 128``
  (:func:`labelfree.core.backbone.preprocess_uint8`); the exported graph takes uint8
  ``(N, S, S, 3)`` and does this inside. ``S`` must be a multiple of 32.
- The head runs on one fused map at stride 8 (or 16), ``H = W = S / stride``:
  ``heat`` logits ``(N, C, H, W)`` (one channel per class; a peak marks an object centre) and
  ``ltrb`` ``(N, 4, H, W)``: distances from the cell centre to the box's left, top, right and
  bottom edges, normalised by the image side, so boxes come out normalised xyxy.
- :func:`decode` turns these into a fixed top-K: ``boxes`` ``(N, K, 4)`` normalised xyxy,
  ``scores`` ``(N, K)``, ``classes`` int64 ``(N, K)``. A max-pool keeps only local maxima
  (peak extraction), so no NMS is needed outside the graph.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from labelfree.core.backbone import Backbone, preprocess_uint8

# Initial heat bias so every cell starts at P(object) = 0.01; avoids a flood of early false positives.
_PRIOR = 0.01


def _conv_bn_relu(c_in: int, c_out: int, kernel: int = 3) -> nn.Sequential:
    # Full convs: on CPU, PyTorch's depthwise backward is as slow as a full conv at this width.
    return nn.Sequential(nn.Conv2d(c_in, c_out, kernel, padding=kernel // 2, bias=False),
                         nn.BatchNorm2d(c_out), nn.ReLU(inplace=True))


class FPNNeck(nn.Module):
    """Top-down pyramid fusing C5 down to one ``(N, width, S/out_stride, S/out_stride)`` map.

    Large objects (most lion photos are close-ups) need C5's context; stride 8 keeps enough
    resolution for small ones, stride 16 costs a quarter as much to train.
    """

    def __init__(self, in_channels: tuple[int, int, int], width: int = 32, out_stride: int = 8):
        super().__init__()
        if out_stride not in (8, 16):
            raise ValueError(f"out_stride must be 8 or 16, got {out_stride}")
        self.levels = 3 if out_stride == 8 else 2
        self.lateral = nn.ModuleList(nn.Conv2d(c, width, 1) for c in in_channels[3 - self.levels:])
        self.smooth = _conv_bn_relu(width, width)

    def forward(self, feats: list[torch.Tensor]) -> torch.Tensor:
        feats = feats[3 - self.levels:]
        p = self.lateral[-1](feats[-1])
        for lateral, c in zip(reversed(self.lateral[:-1]), reversed(feats[:-1])):
            p = lateral(c) + F.interpolate(p, scale_factor=2.0, mode="nearest")
        return self.smooth(p)


class CenterHead(nn.Module):
    """Two conv towers: class heat logits and ``ltrb`` edge distances (softplus, so >= 0)."""

    def __init__(self, width: int, num_classes: int, depth: int = 2, reg_scale: float = 0.25):
        super().__init__()
        self.heat = nn.Sequential(*[_conv_bn_relu(width, width) for _ in range(depth)],
                                  nn.Conv2d(width, num_classes, 1))
        self.reg = nn.Sequential(*[_conv_bn_relu(width, width) for _ in range(depth)], nn.Conv2d(width, 4, 1))
        self.reg_scale = reg_scale
        nn.init.constant_(self.heat[-1].bias, -math.log((1 - _PRIOR) / _PRIOR))
        nn.init.zeros_(self.reg[-1].bias)

    def forward(self, p: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.heat(p), F.softplus(self.reg(p)) * self.reg_scale


class Detector(nn.Module):
    """Backbone + neck + head. ``forward`` takes normalised float ``(N, 3, S, S)``."""

    def __init__(self, backbone: Backbone, num_classes: int = 1, *, width: int = 32, head_depth: int = 2,
                 out_stride: int = 8):
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        self.backbone = backbone
        self.num_classes = num_classes
        self.out_stride = out_stride
        self.neck = FPNNeck(tuple(backbone.pyramid_channels), width, out_stride)
        self.head = CenterHead(width, num_classes, head_depth)

    def forward_pyramid(self, feats: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Neck + head on backbone features ``[C3, C4, C5]`` (lets a frozen backbone run elsewhere)."""
        return self.head(self.neck(feats))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.forward_pyramid(self.backbone.pyramid(x))

    def head_parameters(self) -> list[nn.Parameter]:
        return list(self.neck.parameters()) + list(self.head.parameters())


def cell_centres(height: int, width: int, device: torch.device | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Normalised ``(H, W)`` x and y of each cell centre: ``(j + 0.5) / W``, ``(i + 0.5) / H``."""
    ys = (torch.arange(height, device=device, dtype=torch.float32) + 0.5) / height
    xs = (torch.arange(width, device=device, dtype=torch.float32) + 0.5) / width
    return xs.view(1, width).expand(height, width), ys.view(height, 1).expand(height, width)


def ltrb_to_boxes(ltrb: torch.Tensor) -> torch.Tensor:
    """``(N, 4, H, W)`` edge distances -> ``(N, H, W, 4)`` normalised xyxy boxes at every cell."""
    _, _, h, w = ltrb.shape
    cx, cy = cell_centres(h, w, ltrb.device)
    l, t, r, b = ltrb.unbind(1)
    return torch.stack([cx - l, cy - t, cx + r, cy + b], dim=-1)


def decode(heat_logits: torch.Tensor, ltrb: torch.Tensor, top_k: int = 100,
           pool_kernel: int = 3) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Peak extraction -> fixed top-K (see module docstring). Exports to ONNX with fixed K.

    A cell survives if it is the maximum of its ``pool_kernel`` neighbourhood in its class map;
    duplicates around one object are suppressed without a data-dependent NMS loop.
    """
    n, c, h, w = heat_logits.shape
    if top_k > c * h * w:
        raise ValueError(f"top_k={top_k} is more than the {c * h * w} cells of a {c}x{h}x{w} heat map")
    if pool_kernel < 1 or pool_kernel % 2 == 0:
        raise ValueError(f"pool_kernel must be odd and >= 1, got {pool_kernel}")
    heat = torch.sigmoid(heat_logits.float())
    peaks = F.max_pool2d(heat, pool_kernel, stride=1, padding=pool_kernel // 2)
    heat = heat * (peaks == heat).to(heat.dtype)
    scores, index = torch.topk(heat.reshape(n, c * h * w), top_k, dim=1)
    classes = torch.div(index, h * w, rounding_mode="floor")
    cell = index - classes * (h * w)
    boxes_all = ltrb_to_boxes(ltrb.float()).reshape(n, h * w, 4)
    boxes = torch.gather(boxes_all, 1, cell.unsqueeze(-1).expand(n, top_k, 4)).clamp(0.0, 1.0)
    return boxes, scores, classes.to(torch.int64)


class ExportModel(nn.Module):
    """uint8 ``(N, S, S, 3)`` RGB -> (``boxes``, ``scores``, ``classes``): the deployed graph."""

    def __init__(self, detector: Detector, top_k: int = 100, pool_kernel: int = 3,
                 score_affine: tuple[float, float] = (1.0, 0.0)):
        super().__init__()
        self.detector = detector
        self.top_k = top_k
        self.pool_kernel = pool_kernel
        # Score calibration (``calibrate.fit_score_calibration``): heat logits -> scale * logit + bias
        # before the sigmoid. Monotone, so the peaks and their order do not change.
        self.scale, self.bias = float(score_affine[0]), float(score_affine[1])

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        heat, ltrb = self.detector(preprocess_uint8(images))
        if (self.scale, self.bias) != (1.0, 0.0):
            heat = heat.float() * self.scale + self.bias
        return decode(heat, ltrb, self.top_k, self.pool_kernel)


class PyramidModel(nn.Module):
    """uint8 ``(N, S, S, 3)`` -> ``[C3, C4, C5]``: the frozen backbone, exported for fast CPU training.

    ``below_top``: stop at ``[C3, C4]``, the stages a ``top`` run keeps frozen (``top_stage`` computes
    C5 from C4 in PyTorch, where it trains)."""

    def __init__(self, backbone: Backbone, *, below_top: bool = False):
        super().__init__()
        self.backbone = backbone
        self.below_top = below_top

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(self.backbone.pyramid(preprocess_uint8(images), levels=2 if self.below_top else 3))


def top_stage(backbone: Backbone) -> list[nn.Module] | None:
    """The blocks from C4 to C5 (the last stride-32 stage, what ``backbone_mode='top'`` trains), or
    None for a backbone without numbered blocks."""
    taps, blocks = getattr(backbone, "_taps", None), getattr(backbone, "blocks", None)
    if taps is None or blocks is None:
        return None
    return list(blocks)[taps[1] + 1: taps[2] + 1]
