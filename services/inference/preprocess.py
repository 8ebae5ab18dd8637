"""Turn a decoded photo into the detector's input tensor.

The detector contract: input ``images`` uint8 ``[N, S, S, 3]`` RGB, the photo stretched (not
letterboxed) to ``S x S``; normalisation happens inside the ONNX graph. Boxes come back
normalised, so stretching needs no inverse transform: a normalised box on the stretched
image is the same normalised box on the original.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from PIL import Image

from labelfree.core.images import detector_resize


def stretch(image: Image.Image | np.ndarray, size: int) -> np.ndarray:
    """Stretch one RGB image to ``(size, size, 3)`` uint8.

    ``image``: PIL RGB image or ``(H, W, 3)`` uint8 array.
    """
    if size <= 0:
        raise ValueError(f"size must be positive, got {size}")
    if isinstance(image, np.ndarray):
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"image array must be (H, W, 3) uint8, got {image.shape} {image.dtype}")
        if image.shape[0] == size and image.shape[1] == size:
            return np.ascontiguousarray(image)
        image = Image.fromarray(image)
    if image.mode != "RGB":
        image = image.convert("RGB")
    if image.size != (size, size):
        image = detector_resize(image, size)  # the trainer's resize: same pixels in training and serving
    return np.asarray(image, dtype=np.uint8)


def make_batch(images: Sequence[Image.Image | np.ndarray], size: int) -> np.ndarray:
    """Stack images into one ``(N, size, size, 3)`` uint8 batch."""
    if not images:
        raise ValueError("make_batch needs at least one image")
    out = np.empty((len(images), size, size, 3), dtype=np.uint8)
    for i, image in enumerate(images):
        out[i] = stretch(image, size)
    return out
