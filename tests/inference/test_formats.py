"""Unit tests: MegaDetector JSON and CSV exports."""

import csv
import io
import json
from datetime import datetime

from labelfree.core.megadetector import validate_batch
from labelfree.inference.formats import CSV_COLUMNS, ImageResult, results_csv, results_json

RESULTS = [
    ImageResult("CAM1/a.jpg", [{"category": "1", "conf": 0.91, "bbox": [0.1, 0.2, 0.3, 0.4]},
                               {"category": "1", "conf": 0.4, "bbox": [0.5, 0.5, 0.2, 0.2]}],
                captured_at=datetime(2026, 3, 1, 4, 30), camera="CAM1", sequence_id="CAM1/20260301T043000"),
    ImageResult("CAM1/b.jpg", [], captured_at=datetime(2026, 3, 1, 4, 30, 1), camera="CAM1",
                sequence_id="CAM1/20260301T043000"),
    ImageResult("CAM1/bad.jpg", None, failure="not a decodable image", camera="CAM1", sequence_id="CAM1/untimed-x"),
]
SEQUENCES = {"CAM1/20260301T043000": {"max_conf": 0.91, "images": 2, "best_file": "CAM1/a.jpg"},
             "CAM1/untimed-x": {"max_conf": 0.0, "images": 1, "best_file": "CAM1/bad.jpg"}}


def test_json_is_valid_megadetector_with_extras_and_sequence_verdicts():
    doc = results_json(RESULTS, {"1": "animal"}, detector="tiny", sequences=SEQUENCES)
    validate_batch(json.loads(json.dumps(doc)))
    first, empty, failed = doc["images"]
    assert first["datetime"] == "2026-03-01T04:30:00" and first["sequence_id"] == "CAM1/20260301T043000"
    assert empty["detections"] == [] and empty["failure"] is None
    assert failed["detections"] is None and failed["failure"]
    assert doc["sequences"]["CAM1/20260301T043000"]["max_conf"] == 0.91


def test_csv_has_the_contract_columns_one_row_per_detection():
    doc = results_json(RESULTS, {"1": "animal"}, detector="tiny", sequences=SEQUENCES)
    rows = list(csv.DictReader(io.StringIO(results_csv(doc))))
    assert tuple(rows[0].keys()) == CSV_COLUMNS == ("file", "datetime", "camera", "sequence", "category", "conf",
                                                    "bbox")
    assert len(rows) == 4  # two detections, one empty image, one failed image
    assert json.loads(rows[0]["bbox"]) == [0.1, 0.2, 0.3, 0.4] and rows[0]["sequence"] == "CAM1/20260301T043000"
    assert rows[2]["category"] == "" and rows[2]["conf"] == ""
