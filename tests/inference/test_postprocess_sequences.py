"""Unit tests: post-processing, burst grouping and sequence verdicts."""

from datetime import datetime, timedelta

import numpy as np
import pytest

from labelfree.inference.postprocess import categories_from_labels, max_conf, to_detections
from labelfree.inference.preprocess import make_batch, stretch
from labelfree.inference.sequences import Shot, assign_sequences, camera_of, sequence_verdicts

T0 = datetime(2026, 3, 1, 4, 30, 0)


def test_to_detections_keeps_scores_above_threshold_highest_first_as_xywh():
    boxes = np.array([[0.1, 0.2, 0.5, 0.6], [0.0, 0.0, 1.0, 1.0], [0.3, 0.3, 0.4, 0.4]], np.float32)
    scores = np.array([0.5, 0.05, 0.9], np.float32)
    classes = np.array([0, 0, 1])
    dets = to_detections(boxes, scores, classes, threshold=0.1)
    assert [d["conf"] for d in dets] == [0.9, 0.5]
    assert dets[0]["category"] == "2" and dets[1]["category"] == "1"
    assert dets[1]["bbox"] == [0.1, 0.2, 0.4, 0.4]


def test_to_detections_drops_inverted_padding_boxes_and_rejects_bad_threshold():
    boxes = np.array([[0.5, 0.5, 0.1, 0.1]], np.float32)
    assert to_detections(boxes, np.array([0.9], np.float32), np.array([0])) == []
    with pytest.raises(ValueError, match="threshold"):
        to_detections(boxes, np.array([0.9]), np.array([0]), threshold=1.5)


def test_categories_are_one_based_ids():
    assert categories_from_labels(["snow leopard", "person"]) == {"1": "snow leopard", "2": "person"}
    assert categories_from_labels(None) == {"1": "animal"}
    assert max_conf(None) == 0.0 and max_conf([{"conf": 0.3}, {"conf": 0.7}]) == 0.7


def test_stretch_ignores_aspect_ratio_and_batches_uint8():
    wide = np.zeros((30, 90, 3), np.uint8)
    assert stretch(wide, 64).shape == (64, 64, 3)
    batch = make_batch([wide, np.ones((10, 10, 3), np.uint8)], 32)
    assert batch.shape == (2, 32, 32, 3) and batch.dtype == np.uint8
    with pytest.raises(ValueError, match="uint8"):
        stretch(np.zeros((4, 4, 3), np.float32), 8)


def test_five_frame_burst_is_one_sequence_and_a_gap_starts_another():
    shots = [Shot(f"a{i}", "CAM1", T0 + timedelta(seconds=i)) for i in range(5)]
    shots.append(Shot("late", "CAM1", T0 + timedelta(seconds=4 + 10)))  # exactly the gap: new sequence
    shots.append(Shot("just", "CAM1", T0 + timedelta(seconds=14 + 9.9)))  # below the gap: joins "late"
    seq = assign_sequences(shots, gap_seconds=10)
    assert len({seq[f"a{i}"] for i in range(5)}) == 1
    assert seq["late"] != seq["a0"] and seq["just"] == seq["late"]
    assert seq["a0"] == "CAM1/20260301T043000"


def test_same_time_on_two_cameras_is_two_sequences_and_untimed_shots_stand_alone():
    shots = [Shot("x", "CAM1", T0), Shot("y", "CAM2", T0), Shot("u", "CAM1", None), Shot("v", "CAM1", None)]
    seq = assign_sequences(shots)
    assert len(set(seq.values())) == 4


def test_sequence_verdict_is_the_max_confidence_of_its_frames():
    seq = {"a": "s1", "b": "s1", "c": "s2"}
    verdicts = sequence_verdicts(seq, {"a": 0.2, "b": 0.9, "c": 0.0})
    assert verdicts["s1"] == {"max_conf": 0.9, "images": 2, "best": "b"}
    assert verdicts["s2"]["max_conf"] == 0.0


def test_camera_comes_from_the_folder_path_then_survey_then_exif():
    assert camera_of("CAM07/IMG_1.JPG", survey_camera="S", make="Reconyx", model="HC600") == "CAM07"
    assert camera_of("up/CAM07/100RECNX/IMG_1.JPG") != camera_of("up/CAM08/100RECNX/IMG_1.JPG")
    assert camera_of("IMG_1.JPG", survey_camera="S") == "S"
    assert camera_of("IMG_1.JPG", make="Reconyx", model="HC600") == "Reconyx HC600"
    assert camera_of(None) == "unknown"


def test_manifest_category_ids_map_class_indices():
    assert categories_from_labels(["lion"], [7]) == {"7": "lion"}
    boxes = np.array([[0.1, 0.1, 0.2, 0.2]], np.float32)
    dets = to_detections(boxes, np.array([0.8], np.float32), np.array([0]), category_ids=[7])
    assert dets[0]["category"] == "7"
    with pytest.raises(ValueError, match="class index 3"):
        to_detections(boxes, np.array([0.8], np.float32), np.array([3]), category_ids=[7])
