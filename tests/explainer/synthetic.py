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


