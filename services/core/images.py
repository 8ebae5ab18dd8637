"""Image decoding with limits, EXIF orientation, GPS stripping and capture metadata.

Decoded images are RGB ``uint8`` arrays shaped ``(H, W, 3)``.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from labelfree.core.errors import LabelfreeError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
DEFAULT_MAX_PIXELS = 64_000_000


class ImageDecodeError(LabelfreeError):
    """The bytes are not a usable image (corrupt, truncated, too large, too small)."""

    def __init__(self, detail: str, code: str = "invalid"):
        super().__init__(code, detail)


def decode_image(data: bytes, *, max_pixels: int = DEFAULT_MAX_PIXELS, min_side: int = 1) -> Image.Image:
    """Decode bytes into an RGB PIL image, EXIF orientation applied.

    Raises ImageDecodeError for empty, corrupt or truncated data, for images over
    ``max_pixels`` decoded pixels (decompression bombs) and for sides below ``min_side``.
    """
    if not data:
        raise ImageDecodeError("empty image body")
    try:
        with Image.open(io.BytesIO(data)) as probe:
            width, height = probe.size
            if width * height > max_pixels:
                raise ImageDecodeError(
                    f"image is {width}x{height} = {width * height} pixels, over the limit of {max_pixels}",
                    code="payload_too_large",
                )
            probe.load()  # forces a full decode: truncated files fail here
            image = ImageOps.exif_transpose(probe)
            image = image.convert("RGB")
    except ImageDecodeError:
        raise
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise ImageDecodeError(f"not a decodable image: {exc}") from exc
    if min(image.size) < min_side:
        raise ImageDecodeError(f"image is {image.size[0]}x{image.size[1]}, below the minimum side {min_side}")
    return image


def load_rgb(path: str | Path, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Read a file into an (H, W, 3) uint8 RGB array."""
    return np.asarray(decode_image(Path(path).read_bytes(), max_pixels=max_pixels))


def iter_image_files(roots: Iterable[str | Path]) -> Iterator[Path]:
    """Image files under each root (recursive, sorted, by suffix). A file root is yielded as is."""
    for root in roots:
        root = Path(root)
        if root.is_file():
            yield root
            continue
        if not root.is_dir():
            raise LabelfreeError("bad_request", f"{root} is not a directory")
        for path in sorted(root.rglob("*")):
            if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith("."):
                yield path
