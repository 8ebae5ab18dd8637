"""The Spark path (mapInPandas, local[2]) gives the same records as the in-process path."""

import shutil

import numpy as np
import pytest
from PIL import Image

from labelfree.explainer.batch import ModelLabeller, label_paths
from labelfree.explainer.labeller import LabelConfig
from tests.explainer.synthetic import scene

pytestmark = [pytest.mark.service,
              pytest.mark.skipif(shutil.which("java") is None, reason="Spark needs Java on PATH")]


def test_spark_path_equals_local_path(red_model_dir, tmp_path):
    from labelfree.explainer.spark_job import explain_with_spark

    Image.fromarray(scene(128, ((40, 40, 40),))).save(tmp_path / "one.png")
    Image.fromarray(scene(160, ((8, 12, 40), (104, 100, 40)))).save(tmp_path / "two.png")
    Image.fromarray(scene(64, ())).save(tmp_path / "blank.png")
    (tmp_path / "broken.jpg").write_bytes(b"not an image")
    items = [(p.name, str(p)) for p in sorted(tmp_path.iterdir())]
    config = LabelConfig(method="lime+cam", n_samples=64, n_segments=30, fill="mean", cam_sizes=(128,))
    local = sorted(label_paths(ModelLabeller(red_model_dir, config), items, seed=5), key=lambda r: r["key"])
    spark = explain_with_spark(items, red_model_dir, master="local[2]", config=config, seed=5, partitions=2)
    assert spark == local
    assert [r["key"] for r in spark if r["error"]] == ["broken.jpg"]


def test_spark_foreground_fits_once_then_labels_like_the_local_path(red_model_dir, tmp_path):
    from labelfree.explainer.batch import fit_foreground
    from labelfree.explainer.spark_job import explain_with_spark, fit_foreground_with_spark

    Image.fromarray(scene(128, ((40, 40, 40),))).save(tmp_path / "one.png")
    Image.fromarray(scene(128, ((8, 12, 36), (84, 80, 36)))).save(tmp_path / "two.png")
    Image.fromarray(scene(128, ((70, 10, 30),))).save(tmp_path / "three.png")
    Image.fromarray(scene(64, ())).save(tmp_path / "blank.png")
    (tmp_path / "broken.jpg").write_bytes(b"not an image")
    items = [(p.name, str(p)) for p in sorted(tmp_path.iterdir())]
    config = LabelConfig(method="foreground", cam_sizes=(128,), fg_side=128)
    labeller = ModelLabeller(red_model_dir, config)
    local_fit = fit_foreground(labeller, [p for _, p in items])
    local = sorted(label_paths(labeller, items), key=lambda r: r["key"])
    spark_fit = fit_foreground_with_spark([p for _, p in items], red_model_dir, master="local[2]", config=config,
                                          partitions=2)
    assert spark_fit.n_images == local_fit.n_images == 3
    np.testing.assert_allclose(spark_fit.coef, local_fit.coef, rtol=1e-5)
    assert spark_fit.fine is not None and local_fit.fine is not None  # both levels, fitted alike
    np.testing.assert_allclose(spark_fit.fine.coef, local_fit.fine.coef, rtol=1e-5)
    assert spark_fit.fine.rounds == local_fit.fine.rounds
    spark = explain_with_spark(items, red_model_dir, master="local[2]", config=config, partitions=2)
    assert spark == local
    assert len(next(r for r in spark if r["key"] == "two.png")["boxes"]) == 2
