"""A small REAL detector ONNX model with the team's detector signature, for tests and benches.

Input ``images`` uint8 ``[N, S, S, 3]``; outputs ``boxes`` float32 ``[N, K, 4]`` (normalised
xyxy), ``scores`` float32 ``[N, K]``, ``classes`` int64 ``[N, K]``. It scores each cell of a
``G x G`` grid by its brightness (sigmoid of a steep ramp around mid-grey) and returns the
top-K cells, each boxed by its cell: a bright square on a dark field gives high-scoring boxes
inside the square and near-zero scores elsewhere, so tests know the answer.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np


def build_tiny_detector(out_dir: Path, *, size: int = 64, grid: int = 8, k: int = 16, work: int = 0) -> Path:
    """Export the model to ``out_dir/model.onnx`` with ``manifest.json`` and ``metrics.json``.

    ``work`` adds that many 3x3, 32-channel convolutions over the full input whose output
    nudges the scores by at most 1e-6: a model that costs real compute per image (for
    tests that must catch a job mid-way, and for benchmarks), with the same answers.
    """
    import torch

    if size % grid:
        raise ValueError(f"size {size} is not a multiple of grid {grid}")

    class Tiny(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            cells = torch.arange(grid, dtype=torch.float32)
            y, x = torch.meshgrid(cells, cells, indexing="ij")
            xyxy = torch.stack([x, y, x + 1, y + 1], dim=-1).reshape(-1, 4) / grid
            self.register_buffer("cell_boxes", xyxy)  # (G*G, 4) normalised xyxy
            gen = torch.Generator().manual_seed(0)
            self.convs = torch.nn.ModuleList(torch.nn.Conv2d(3 if i == 0 else 32, 32, 3, padding=1)
                                             for i in range(work))
            for conv in self.convs:
                torch.nn.init.normal_(conv.weight, std=0.05, generator=gen)

        def forward(self, images: torch.Tensor):
            x = images.permute(0, 3, 1, 2).float() / 255.0  # preprocessing inside the graph
            cell = torch.nn.functional.avg_pool2d(x.mean(1, keepdim=True), size // grid)  # (N,1,G,G)
            score = torch.sigmoid((cell.flatten(1) - 0.5) * 20.0)  # (N, G*G)
            if len(self.convs):
                h = x
                for conv in self.convs:
                    h = torch.relu(conv(h))
                score = score * (1.0 - 1e-6 * torch.sigmoid(h.mean(dim=(1, 2, 3)))[:, None])
            scores, idx = torch.topk(score, k, dim=1)
            boxes = self.cell_boxes[idx]  # (N, K, 4)
            classes = torch.zeros_like(idx)
            return boxes, scores, classes

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model = Tiny().eval()
    example = torch.zeros(2, size, size, 3, dtype=torch.uint8)
    torch.onnx.export(
        model, (example,), str(out_dir / "model.onnx"), input_names=["images"],
        output_names=["boxes", "scores", "classes"], dynamic_axes={"images": {0: "N"}, "boxes": {0: "N"},
                                                                   "scores": {0: "N"}, "classes": {0: "N"}},
        opset_version=17, dynamo=False,
    )
    manifest = {"kind": "detector", "name": "tiny-test-detector", "input_size": size, "top_k": k,
                "labels": ["animal"], "inputs": {"images": ["N", size, size, 3]},
                "outputs": {"boxes": ["N", k, 4], "scores": ["N", k], "classes": ["N", k]}}
    (out_dir / "manifest.json").write_text(json.dumps(manifest, indent=2))
    (out_dir / "metrics.json").write_text("{}")
    return out_dir


def square_image(size: int = 128, box: tuple[int, int, int, int] = (32, 32, 96, 96)) -> np.ndarray:
    """(size, size, 3) uint8: a white square (xyxy pixels ``box``) on black."""
    img = np.zeros((size, size, 3), np.uint8)
    x0, y0, x1, y1 = box
    img[y0:y1, x0:x1] = 255
    return img
