"""Box extraction: regions of evidence -> boxes, and the labeller built on LIME."""

import numpy as np
import pytest

from labelfree.explainer.boxes import box_iou, mask_boxes, merge_close_boxes, select_segments
from labelfree.explainer.labeller import LabelConfig, label_image
from tests.explainer.synthetic import red_logit, scene

LIME = LabelConfig(method="lime", n_samples=128, n_segments=30, fill="mean", split_h=None)


def test_select_segments_takes_the_top_cumulative_share():
    selected = select_segments(np.array([5.0, -3.0, 3.0, 2.0, 0.0]), threshold=0.8)
    np.testing.assert_array_equal(selected, [True, False, True, False, False])
    assert not select_segments(np.array([-1.0, 0.0])).any()


def test_mask_boxes_gives_one_box_per_region_and_drops_tiny_ones():
    mask = np.zeros((100, 100), bool)
    mask[10:30, 10:40] = True
    mask[60:90, 50:95] = True
    mask[0:2, 98:100] = True  # a speck
    boxes, scores = mask_boxes(mask, mask.astype(float), merge_gap=0.0)
    assert len(boxes) == 2
    np.testing.assert_allclose(boxes[0], [50, 60, 95, 90])  # largest evidence first
    np.testing.assert_allclose(boxes[1], [10, 10, 40, 30])
    assert scores[0] > scores[1]


def test_close_pieces_of_one_object_merge():
    boxes, mass = merge_close_boxes(np.array([[0, 0, 10, 10], [12, 0, 20, 10], [80, 80, 90, 90]]),
                                    np.array([1.0, 1.0, 1.0]), gap=3.0)
    assert len(boxes) == 2 and mass.tolist() == [2.0, 1.0]


def test_red_square_classifier_gives_a_box_around_the_square():
    image = scene(64, ((20, 20, 20),))
    out = label_image(image, rng=np.random.default_rng(0), config=LIME, predict_logit=red_logit, model_side=64)
    assert len(out.boxes) >= 1
    assert box_iou(out.boxes[:1], np.array([[20, 20, 40, 40]]))[0, 0] > 0.6


def test_two_squares_give_two_boxes():
    image = scene(80, ((5, 8, 18), (55, 52, 18)))
    out = label_image(image, rng=np.random.default_rng(0), config=LIME, predict_logit=red_logit, model_side=80)
    assert len(out.boxes) == 2
    iou = box_iou(out.boxes, np.array([[5, 8, 23, 26], [55, 52, 73, 70]]))
    assert iou.max(axis=0).min() > 0.5


def test_blank_image_gives_no_box():
    out = label_image(scene(64, ()), rng=np.random.default_rng(0), config=LIME, predict_logit=red_logit,
                      model_side=64)
    assert len(out.boxes) == 0 and out.info["absent"]


def test_boxes_are_scaled_back_to_the_original_image():
    image = np.repeat(np.repeat(scene(64, ((20, 20, 20),)), 2, axis=0), 3, axis=1)  # 128 x 192
    out = label_image(image, rng=np.random.default_rng(0), config=LIME,
                      predict_logit=lambda b: red_logit(b) * 1.0, model_side=64)
    assert box_iou(out.boxes[:1], np.array([[60, 40, 120, 80]]))[0, 0] > 0.5


def test_unknown_method_is_rejected():
    with pytest.raises(ValueError, match="method"):
        LabelConfig(method="gradcam")
