"""One small detector trained once per session on synthetic blobs, shared by the export tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.trainer.detector.synthetic import write_dataset

SIZE = 96


@pytest.fixture(scope="session")
def synthetic(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("det_synthetic")
    boxes_json, truths = write_dataset(root, 6, 96, np.random.default_rng(0), n_negatives=2)
    return {"root": root, "images": root / "images", "boxes": boxes_json, "truths": truths}


@pytest.fixture(scope="session")
def trained(synthetic, tmp_path_factory) -> dict:
    """Overfit 6 images (no augmentation) and export: DET_DIR plus the in-memory model."""
    from labelfree.trainer.detector.build import build_detector
    from labelfree.trainer.detector.train import TrainConfig

    out = tmp_path_factory.mktemp("det_dir")
    config = TrainConfig(input_size=SIZE, epochs=16, min_steps=0, batch_size=4, lr=5e-3, val_fraction=0.0,
                         augment=False, neg_fraction=0.2, top_k=20)
    manifest = build_detector(synthetic["images"], synthetic["boxes"], out, config=config,
                              show_progress=False, provenance={"boxes_run": "test"}, unboxed_as_negative=True,
                              self_train_rounds=0)
    return {"dir": Path(out), "manifest": manifest, "config": config}
