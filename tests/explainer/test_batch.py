"""The ONNX path: labeller over a contract-conforming model, COCO output, bad files, Spark == local."""

import json

import numpy as np
import pytest
from PIL import Image

from labelfree.explainer.batch import ModelLabeller, label_paths
from labelfree.explainer.boxes import box_iou
from labelfree.explainer.coco import coco_predictions, to_coco, validate_coco
from labelfree.explainer.labeller import LabelConfig
from tests.explainer.synthetic import scene

FAST = LabelConfig(method="lime+cam", n_samples=128, n_segments=30, fill="mean", cam_sizes=(128, 160))


@pytest.fixture
def image_dir(tmp_path):
    Image.fromarray(scene(128, ((40, 40, 40),))).save(tmp_path / "one.png")
    Image.fromarray(scene(160, ((8, 12, 40), (104, 100, 40)))).save(tmp_path / "two.png")
    Image.fromarray(scene(64, ())).save(tmp_path / "blank.png")
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    return tmp_path


def _items(image_dir):
    return [(p.name, str(p)) for p in sorted(image_dir.iterdir())]


@pytest.mark.parametrize("method", ["cam", "lime+cam", "lime"])
def test_onnx_labeller_finds_squares_skips_blank_and_reports_bad_files(red_model_dir, image_dir, method):
    config = LabelConfig(**{**FAST.__dict__, "method": method})
    records = {r["key"]: r for r in label_paths(ModelLabeller(red_model_dir, config), _items(image_dir))}
    assert records["broken.jpg"]["error"] and records["broken.jpg"]["boxes"] == []
    assert records["blank.png"]["boxes"] == [] and records["blank.png"]["error"] is None
    assert box_iou(np.array(records["one.png"]["boxes"][:1]), np.array([[40, 40, 80, 80]]))[0, 0] > 0.5
    two = np.array(records["two.png"]["boxes"])
    assert len(two) == 2
    assert box_iou(two, np.array([[8, 12, 48, 52], [104, 100, 144, 140]])).max(axis=0).min() > 0.45


def test_coco_export_round_trips_and_lists_skipped(red_model_dir, image_dir):
    records = list(label_paths(ModelLabeller(red_model_dir, FAST), _items(image_dir)))
    data = json.loads(json.dumps(to_coco(records, "red")))
    validate_coco(data)
    assert [s["file_name"] for s in data["skipped"]] == ["broken.jpg"]
    assert {im["file_name"] for im in data["images"]} == {"blank.png", "one.png", "two.png"}
    preds = coco_predictions(data)
    assert len(preds["blank.png"][0]) == 0 and len(preds["two.png"][0]) == 2


def test_fixed_seed_gives_identical_records(red_model_dir, image_dir):
    labeller = ModelLabeller(red_model_dir, LabelConfig(**{**FAST.__dict__, "method": "lime"}))
    assert list(label_paths(labeller, _items(image_dir), seed=3)) == list(label_paths(labeller, _items(image_dir), seed=3))
