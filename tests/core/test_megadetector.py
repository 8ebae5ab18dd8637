"""MegaDetector batch format: builder output validates; the validator raises on each bad case."""

from __future__ import annotations

import copy
import csv
import io
import json

import pytest

from labelfree.core.megadetector import (
    MegaDetectorFormatError,
    bbox_from_xyxy,
    build_batch,
    detection,
    image_entry,
    parse_version,
    validate_batch,
    write_csv,
)


def _good() -> dict:
    return build_batch(
        [
            image_entry("a/lion.jpg", [detection(1, 0.93, bbox_from_xyxy([0.1, 0.2, 0.5, 0.9]))],
                        camera="cam-3"),
            image_entry("empty.jpg", []),
            image_entry("broken.jpg", None, failure="not a decodable image"),
        ],
        {1: "animal"}, detector="labelfree-detector")


def test_builder_output_validates_and_round_trips_json():
    doc = _good()
    validate_batch(json.loads(json.dumps(doc)))
    assert doc["info"]["format_version"].startswith("1.")
    assert doc["detection_categories"] == {"1": "animal"}
    assert doc["images"][0]["detections"][0]["bbox"] == [0.1, 0.2, 0.4, 0.7]
    assert doc["images"][1] == {"file": "empty.jpg", "detections": [], "failure": None}
    assert doc["images"][2]["detections"] is None


def test_versions_compare_as_tuples_not_floats():
    assert parse_version("1.10") > parse_version("1.9")
    doc = _good()
    doc["info"]["format_version"] = "1.10"
    validate_batch(doc)
    for bad in ("2.0", "0.9", "one", "", 1.4):
        doc["info"]["format_version"] = bad
        with pytest.raises(MegaDetectorFormatError):
            validate_batch(doc)


def test_spec_allows_absent_failure_and_absent_detections_on_failure():
    doc = _good()
    del doc["images"][1]["failure"]
    del doc["images"][2]["detections"]
    validate_batch(doc)


@pytest.mark.parametrize("mutate, message", [
    (lambda d: d.pop("images"), "images"),
    (lambda d: d.pop("info"), "info"),
    (lambda d: d["info"].pop("format_version"), "format_version"),
    (lambda d: d["detection_categories"].update({"x": "animal"}), "integer string"),
    (lambda d: d["detection_categories"].update({"2": " "}), "non-blank"),
    (lambda d: d["images"][1].update(detections=None), "must be a list"),
    (lambda d: d["images"][1].pop("detections"), "must be a list"),
    (lambda d: d["images"][2].update(detections=[]), "must be null"),
    (lambda d: d["images"][0].update(file=""), "file"),
    (lambda d: d["images"].append(dict(d["images"][1])), "appears twice"),
    (lambda d: d["images"][0]["detections"][0].update(conf=1.5), "conf"),
    (lambda d: d["images"][0]["detections"][0].update(conf=True), "conf"),
    (lambda d: d["images"][0]["detections"][0].update(category=1), "category"),
    (lambda d: d["images"][0]["detections"][0].update(category="7"), "not in detection_categories"),
    (lambda d: d["images"][0]["detections"][0].update(bbox=[0.1, 0.2, 0.3]), "bbox"),
    (lambda d: d["images"][0]["detections"][0].update(bbox=[0.1, 0.2, -0.3, 0.1]), "negative"),
    (lambda d: d["images"][0]["detections"][0].update(bbox=[10, 20, 30, 40]), "normalised"),
    (lambda d: d["images"][0]["detections"][0].update(bbox=[0.1, 0.2, float("nan"), 0.1]), "bbox"),
    (lambda d: d["images"][0]["detections"][0].pop("conf"), "conf"),
])
def test_validator_raises_naming_the_bad_field(mutate, message):
    doc = copy.deepcopy(_good())
    mutate(doc)
    with pytest.raises(MegaDetectorFormatError, match=message):
        validate_batch(doc)


def test_validator_raises_even_under_python_O():
    # It must be a raise, not an assert: check the error type is a ValueError subclass.
    assert issubclass(MegaDetectorFormatError, ValueError)


def test_builders_reject_contradictory_states():
    with pytest.raises(ValueError, match="detections=None"):
        image_entry("x.jpg", [], failure="boom")
    with pytest.raises(ValueError, match="failure reason"):
        image_entry("x.jpg", None)
    with pytest.raises(ValueError, match="extras"):
        image_entry("x.jpg", [], gps="51N")
    with pytest.raises(ValueError, match="x1 < x0"):
        bbox_from_xyxy([0.5, 0.1, 0.2, 0.3])


def test_csv_has_one_row_per_detection_and_one_per_empty_or_failed_image():
    buffer = io.StringIO()
    assert write_csv(_good(), buffer) == 3
    rows = list(csv.DictReader(io.StringIO(buffer.getvalue())))
    assert [r["file"] for r in rows] == ["a/lion.jpg", "empty.jpg", "broken.jpg"]
    assert rows[0]["category_name"] == "animal" and float(rows[0]["w"]) == pytest.approx(0.4)
    assert rows[0]["camera"] == "cam-3"
    assert rows[1]["conf"] == "" and rows[2]["failure"] == "not a decodable image"


def test_confidences_keep_three_significant_digits_so_weak_detections_keep_their_order():
    confs = [0.95649, 0.0123456, 0.000456789, 0.0004, 0.0001, 0.0]
    got = [detection(0, c, [0.1, 0.1, 0.2, 0.2])["conf"] for c in confs]
    assert got == [0.956, 0.0123, 0.000457, 0.0004, 0.0001, 0.0]
    assert got[3] > got[4] > 0  # three decimals would tie both at 0.0
    assert detection(0, 0.99996, [0, 0, 1, 1])["conf"] == 1.0
