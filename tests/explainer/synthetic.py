"""Synthetic images and classifiers with known answers for the explainer tests."""

from __future__ import annotations

import numpy as np


def red_logit(batch: np.ndarray) -> np.ndarray:
    """A 'red thing' classifier: logit grows with the number of strongly red pixels.

    (N, H, W, 3) uint8 -> (N,) float. Negative (absent) when fewer than 40 red pixels show.
    """
    b = batch.astype(np.int16)
    red = (b[..., 0] > 150) & (b[..., 1] < 90) & (b[..., 2] < 90)
    return red.sum(axis=(1, 2)) / 20.0 - 2.0


def scene(size: int = 64, squares: tuple[tuple[int, int, int], ...] = ((20, 20, 20),)) -> np.ndarray:
    """A green-grey textured field with red squares (x, y, side); (size, size, 3) uint8."""
    rng = np.random.default_rng(0)
    image = np.empty((size, size, 3), np.uint8)
    image[..., 0] = 60
    image[..., 1] = 110
    image[..., 2] = 70
    image = np.clip(image + rng.integers(-10, 10, image.shape), 0, 255).astype(np.uint8)
    for x, y, side in squares:
        image[y:y + side, x:x + side] = (220, 30, 30)
    return image




def write_red_model(model_dir) -> None:
    """A tiny ONNX classifier obeying the MODEL_DIR contract that fires on red pixels.

    ``cam`` is an 8x8-pixel-cell map of (red share * 12 - 0.3), so a cell votes positive when
    over 2.5% of it is red; ``logit`` = mean(cam), ``score`` = sigmoid(logit).
    Built like an exported classifier: 4x4-cell stride-16-like features (red share, green share,
    mean blue) -> an inverted-residual-shaped downsampling (1x1 expand conv -> Clip -> stride-2
    depthwise conv, together a 2x2 mean) -> 8x8-cell "features" -> head ``Conv -> Clip ->
    Mul(coef)`` -> sum + intercept, so the explainer can expose both feature levels the way it
    does for real models.
    """
    import json
    from pathlib import Path

    import torch

    class Red(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.head = torch.nn.Conv2d(3, 2, 1)
            with torch.no_grad():
                self.head.weight.zero_()
                self.head.bias.zero_()
                self.head.weight[0, 0] = 6.0   # 6 x red share: never clipped by ReLU6
                self.head.weight[1, 1] = 1.0
            self.expand = torch.nn.Conv2d(3, 3, 1)
            self.down = torch.nn.Conv2d(3, 3, 2, stride=2, groups=3, bias=False)
            with torch.no_grad():
                self.expand.weight.copy_(torch.eye(3).view(3, 3, 1, 1))
                self.expand.bias.zero_()
                self.down.weight.fill_(0.25)
            self.register_buffer("coef", torch.tensor([2.0, 0.0]).view(1, 2, 1, 1))
            self.register_buffer("intercept", torch.tensor(-0.3))

        def forward(self, images):
            x = images.float()
            red = ((x[..., 0] > 150) & (x[..., 1] < 90) & (x[..., 2] < 90)).float()
            green = (x[..., 1] > 90).float()
            channels = torch.stack([red, green, x[..., 2] / 255.0], dim=1)
            fine = torch.nn.functional.avg_pool2d(channels, 4)
            features = self.down(torch.clamp(self.expand(fine), 0.0, 6.0))
            head = torch.clamp(self.head(features), 0.0, 6.0)
            cam = (head * self.coef).sum(dim=1) + self.intercept
            logit = cam.mean(dim=(1, 2))
            return torch.sigmoid(logit), logit, cam

    model_dir = Path(model_dir)
    model_dir.mkdir(parents=True, exist_ok=True)
    torch.onnx.export(Red(), torch.zeros(1, 64, 64, 3, dtype=torch.uint8), str(model_dir / "model.onnx"),
                      input_names=["images"], output_names=["score", "logit", "cam"],
                      dynamic_axes={"images": {0: "n", 1: "h", 2: "w"}, "score": {0: "n"}, "logit": {0: "n"},
                                    "cam": {0: "n", 1: "ch", 2: "cw"}}, opset_version=17, dynamo=False)
    (model_dir / "manifest.json").write_text(json.dumps({"input_size": 64, "labels": ["negative", "red"]}))
    (model_dir / "metrics.json").write_text("{}")
