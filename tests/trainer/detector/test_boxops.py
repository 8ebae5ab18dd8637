import numpy as np
import pytest
import torch

from labelfree.trainer.detector.boxops import box_convert, box_iou, giou_loss, match_ap, nms, top_box_iou


def test_box_convert_round_trips_between_formats():
    xyxy = np.array([[10, 20, 50, 80]], float)
    assert box_convert(xyxy, "xyxy", "xywh").tolist() == [[10, 20, 40, 60]]
    assert box_convert(xyxy, "xyxy", "cxcywh").tolist() == [[30, 50, 40, 60]]
    assert np.allclose(box_convert(box_convert(xyxy, "xyxy", "cxcywh"), "cxcywh", "xyxy"), xyxy)
    with pytest.raises(ValueError, match="xyzw"):
        box_convert(xyxy, "xyzw", "xyxy")


def test_box_iou_known_values():
    a = np.array([[0, 0, 10, 10]], float)
    b = np.array([[0, 0, 10, 10], [5, 0, 15, 10], [20, 20, 30, 30]], float)
    assert np.allclose(box_iou(a, b), [[1.0, 50 / 150, 0.0]])


def test_giou_is_zero_for_identical_and_above_one_for_disjoint():
    a = torch.tensor([[0.1, 0.1, 0.5, 0.5]])
    assert float(giou_loss(a, a)) == pytest.approx(0.0, abs=1e-6)
    assert float(giou_loss(a, torch.tensor([[0.6, 0.6, 0.9, 0.9]]))) > 1.0


def test_nms_keeps_highest_of_overlapping():
    boxes = np.array([[0, 0, 10, 10], [1, 1, 10, 10], [20, 20, 30, 30]], float)
    assert nms(boxes, np.array([0.5, 0.9, 0.3]), 0.5).tolist() == [1, 2]


def test_ap_and_top_box_iou():
    truth = [np.array([[0, 0, 10, 10]], float), np.array([[0, 0, 10, 10]], float)]
    boxes = [np.array([[0, 0, 10, 10], [50, 50, 60, 60]], float), np.array([[30, 30, 40, 40]], float)]
    scores = [np.array([0.9, 0.8]), np.array([0.95])]
    # Ranked: miss (0.95), hit (0.9), miss (0.8): recall 0.5 reached at precision 0.5.
    assert match_ap(boxes, scores, truth) == pytest.approx(0.25)
    assert top_box_iou(boxes, scores, truth).tolist() == [1.0, 0.0]
