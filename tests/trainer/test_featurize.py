"""trainer.featurize: ONNX featuriser vs PyTorch, skipped files, duplicates, cache hits."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from labelfree.core.backbone import load_backbone, preprocess_uint8
from labelfree.core.store import LocalStore
from labelfree.trainer.featurize import FeatureCache, featurize_files, image_views


def test_onnx_featurizer_matches_pytorch_pooled_features(featurizer):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (3, 224, 224, 3), dtype=np.uint8)
    got = featurizer(images)
    with torch.no_grad():
        want = load_backbone("efficientnet-lite0")(preprocess_uint8(torch.from_numpy(images))).mean((2, 3)).numpy()
    assert got.shape == (3, 1280)
    np.testing.assert_allclose(got, want, atol=1e-4)


def test_image_views_flip_mirrors_and_crop_zooms():
    image = Image.fromarray(np.tile(np.arange(64, dtype=np.uint8)[None, :, None], (64, 1, 3)))
    views = image_views(image, 32, ("full", "flip", "crop"))
    assert all(v.shape == (32, 32, 3) and v.dtype == np.uint8 for v in views.values())
    np.testing.assert_array_equal(views["flip"], views["full"][:, ::-1])
    assert views["crop"][0, 0, 0] > views["full"][0, 0, 0]  # the crop starts further right
    with pytest.raises(ValueError, match="unknown views"):
        image_views(image, 32, ("rotate",))


def test_unreadable_images_are_skipped_and_counted(featurizer, image_folders, tmp_path):
    files = sorted(image_folders["neg"].glob("*.png"))[:3] + [image_folders["broken"] / "broken_00.jpg",
                                                            tmp_path / "missing.jpg"]
    fs = featurize_files(files, featurizer, featurizer.input_size)
    assert fs.files == files[:3] and fs.features["full"].shape == (3, 1280)
    assert [p for p, _ in fs.skipped] == files[3:]
    assert "not a decodable image" in fs.skipped[0][1]


def test_duplicate_bytes_are_featurised_once(featurizer, image_folders, tmp_path):
    src = sorted(image_folders["pos"].glob("*.png"))[0]
    copy = tmp_path / "copy.png"
    shutil.copy(src, copy)
    fs = featurize_files([src, copy], featurizer, featurizer.input_size, views=("full", "flip"))
    assert fs.computed == 2 and fs.sha256[0] == fs.sha256[1]
    np.testing.assert_array_equal(fs.features["flip"][0], fs.features["flip"][1])


def test_retrain_hits_the_cache_and_gives_identical_features(featurizer, image_folders, tmp_path):
    files = sorted(image_folders["neg"].glob("*.png"))[:4]
    cache = FeatureCache(LocalStore(tmp_path / "store"), featurizer.version)
    first = featurize_files(files, featurizer, featurizer.input_size, views=("full", "crop"), cache=cache)
    assert first.computed == 8 and first.cache_hits == 0
    calls = []
    second = featurize_files(files, lambda x: calls.append(x) or featurizer(x), featurizer.input_size,
                             views=("full", "crop"), cache=cache)
    assert second.computed == 0 and second.cache_hits == 8 and not calls
    np.testing.assert_array_equal(first.features["crop"], second.features["crop"])
    assert first.phash == second.phash
    key = cache.key(first.sha256[0], "full")
    assert key.startswith(f"features/{featurizer.version}/full/") and key.endswith(".parquet")
