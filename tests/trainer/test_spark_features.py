"""trainer.spark_features: the Spark path gives the local path's features."""

from __future__ import annotations

import numpy as np

from labelfree.core.store import LocalStore
from labelfree.trainer.featurize import FeatureCache, featurize_files
from labelfree.trainer.spark_features import spark_featurize_files


def test_spark_path_equals_local_path_and_fills_the_cache(featurizer, image_folders, tmp_path):
    files = (sorted(image_folders["pos"].rglob("*.*"))[:2] + sorted(image_folders["neg"].glob("*.png"))[:2]
             + [image_folders["broken"] / "broken_00.jpg"])
    local = featurize_files(files, featurizer, featurizer.input_size, views=("full", "flip"))
    cache = FeatureCache(LocalStore(tmp_path / "store"), featurizer.version)
    spark = spark_featurize_files(files, featurizer.onnx_path, featurizer.input_size, master="local[2]",
                                  views=("full", "flip"), cache=cache, batch_size=4, num_partitions=2)
    assert spark.files == local.files and spark.sha256 == local.sha256 and spark.phash == local.phash
    for view in ("full", "flip"):
        np.testing.assert_allclose(spark.features[view], local.features[view], atol=1e-5)
    assert [p for p, _ in spark.skipped] == [image_folders["broken"] / "broken_00.jpg"]
    assert spark.computed == 8 and spark.cache_hits == 0

    again = spark_featurize_files(files, featurizer.onnx_path, featurizer.input_size, master="local[2]",
                                  views=("full", "flip"), cache=cache)
    assert again.cache_hits == 8 and again.computed == 0
    np.testing.assert_array_equal(again.features["full"], spark.features["full"])
