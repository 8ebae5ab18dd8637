"""Shared fixtures for the classifier tests: synthetic image folders and one featuriser."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image


def make_image(kind: str, rng: np.random.Generator, size: int = 96) -> Image.Image:
    """A synthetic RGB image whose class a pretrained backbone separates easily.

    ``stripes``: high-frequency black/white stripes at a random angle (positives);
    ``smooth``: a soft colour gradient plus mild noise (negatives).
    """
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    if kind == "stripes":
        angle = rng.uniform(0, np.pi)
        phase = (np.cos(angle) * xx + np.sin(angle) * yy) * rng.uniform(6, 10) * 2 * np.pi
        grey = (np.sin(phase) > 0).astype(np.float32) * 255
        rgb = np.stack([grey] * 3, -1)
    elif kind == "smooth":
        c0, c1 = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
        t = (xx * rng.uniform(0, 1) + yy * rng.uniform(0, 1))[..., None] / 2
        rgb = c0 * (1 - t) + c1 * t + rng.normal(0, 4, (size, size, 3))
    else:
        raise ValueError(f"unknown kind {kind!r}")
    return Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8))


def write_images(folder: Path, kind: str, n: int, rng: np.random.Generator, suffix: str = ".png") -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        path = folder / f"{kind}_{i:03d}{suffix}"
        make_image(kind, rng).save(path)
        paths.append(path)
    return paths


@pytest.fixture(scope="session")
def image_folders(tmp_path_factory) -> dict[str, Path]:
    """``pos`` (14 stripes, one in a sub-folder), ``neg`` (14 smooth), ``few`` (5 stripes),
    ``empty`` (no files), ``broken`` (12 corrupt .jpg files)."""
    rng = np.random.default_rng(0)
    root = tmp_path_factory.mktemp("images")
    write_images(root / "pos", "stripes", 13, rng)
    write_images(root / "pos" / "sub", "stripes", 1, rng, suffix=".jpg")
    write_images(root / "neg", "smooth", 14, rng)
    write_images(root / "few", "stripes", 5, rng)
    (root / "empty").mkdir()
    (root / "broken").mkdir()
    for i in range(12):
        (root / "broken" / f"broken_{i:02d}.jpg").write_bytes(b"not a jpeg %d" % i)
    return {name: root / name for name in ("pos", "neg", "few", "empty", "broken")}


@pytest.fixture(scope="session")
def featurizer():
    """The Lite0 ONNX featuriser, exported once per session into the settings' cache dir
    (the same place the CLI looks), so later CLI tests reuse it."""
    from labelfree.core.settings import get_settings
    from labelfree.trainer.featurize import get_featurizer

    return get_featurizer("efficientnet-lite0", get_settings().data_dir / "cache")
