import json

import numpy as np
import pytest

from labelfree.trainer.detector.data import (DetectionDataset, augment, epoch_order, load_coco_boxes, mosaic,
                                              paste_instance)
from labelfree.trainer.detector.loss import image_targets
from tests.trainer.detector.synthetic import make_image


def test_augment_keeps_every_box_on_its_object():
    rng = np.random.default_rng(1)
    for trial in range(20):
        image, boxes = make_image(128, 2, rng)
        view, norm = augment(image, boxes, 64, rng, zoom_out_p=0.5, crop_p=0.8, jitter=0.0)
        assert view.shape == (64, 64, 3) and view.dtype == np.uint8
        assert norm.shape == (2, 4) and (norm >= 0).all() and (norm <= 1).all()
        for x0, y0, x1, y1 in norm * 64:
            # The ellipse centre is bright in the view: the box moved with the pixels.
            assert view[int((y0 + y1) / 2), int((x0 + x1) / 2)].mean() > 150, trial


def test_augment_rejects_bad_image():
    with pytest.raises(ValueError, match="H, W, 3"):
        augment(np.zeros((10, 10), np.uint8), np.zeros((0, 4)), 32, np.random.default_rng(0))


def test_mosaic_keeps_every_box_on_its_object(synthetic):
    samples = load_coco_boxes(synthetic["boxes"], synthetic["images"])[0]
    dataset = DetectionDataset(samples, 96, train=True, seed=3, mosaic=1.0)
    n_boxes = 0
    for i in range(len(dataset)):
        view, norm, labels, weights = (t.numpy() for t in dataset[i])
        assert view.shape == (96, 96, 3) and len(norm) == len(labels) == len(weights)
        for x0, y0, x1, y1 in norm * 96:
            assert view[int((y0 + y1) / 2), int((x0 + x1) / 2)].mean() > 100
            n_boxes += 1
    assert n_boxes > len(dataset)  # several objects per mosaic view


def test_mosaic_maps_boxes_into_quadrants():
    tiles = [(np.full((8, 8, 3), k, np.uint8), np.array([[0.0, 0.0, 1.0, 1.0]], np.float32)) for k in range(4)]
    canvas, boxes = mosaic(tiles)
    assert canvas.shape == (16, 16, 3) and canvas[12, 4, 0] == 2 and canvas[4, 12, 0] == 1
    assert np.allclose(boxes, [[0, 0, 0.5, 0.5], [0.5, 0, 1, 0.5], [0, 0.5, 0.5, 1], [0.5, 0.5, 1, 1]])
    with pytest.raises(ValueError, match="4 tiles"):
        mosaic(tiles[:3])


def test_paste_adds_a_boxed_object_that_leaves_the_others_visible():
    rng = np.random.default_rng(2)
    donor, donor_boxes = make_image(128, 1, rng)
    placed = 0
    for trial in range(20):
        image, boxes = make_image(128, 1, rng)
        view, norm = augment(image, boxes, 96, rng, jitter=0.0)
        out = paste_instance(view, norm, donor, donor_boxes[0], rng, max_cover=0.4)
        if out is None:
            continue
        placed += 1
        pasted, new = out
        assert pasted.shape == view.shape and new.shape == (2, 4) and np.allclose(new[0], norm[0])
        x0, y0, x1, y1 = new[1]
        assert 0 <= x0 < x1 <= 1 and 0 <= y0 < y1 <= 1
        iw = max(0.0, min(x1, norm[0, 2]) - max(x0, norm[0, 0]))
        ih = max(0.0, min(y1, norm[0, 3]) - max(y0, norm[0, 1]))
        assert iw * ih <= 0.4 * (norm[0, 2] - norm[0, 0]) * (norm[0, 3] - norm[0, 1]) + 1e-6, trial
        # the pasted ellipse is bright at the new box's centre
        assert pasted[int((y0 + y1) / 2 * 96), int((x0 + x1) / 2 * 96)].mean() > 150, trial
    assert placed >= 10


def test_paste_leaves_a_close_up_alone_when_it_may_cover_little():
    # A close-up: the animal fills the frame, so a pasted one of its size must cover much of it.
    rng = np.random.default_rng(5)
    donor, donor_boxes = make_image(128, 1, rng)
    view = np.full((96, 96, 3), 40, np.uint8)
    close_up = np.array([[0.05, 0.05, 0.95, 0.95]], np.float32)
    assert all(paste_instance(view, close_up, donor, donor_boxes[0], rng, max_cover=0.1) is None for _ in range(20))
    assert any(paste_instance(view, close_up, donor, donor_boxes[0], rng, max_cover=0.4) is not None
               for _ in range(20))
    # an empty view always has room
    assert paste_instance(view, np.zeros((0, 4), np.float32), donor, donor_boxes[0], rng, max_cover=0.0) is not None


def test_dataset_paste_gives_views_with_more_objects(synthetic):
    samples = load_coco_boxes(synthetic["boxes"], synthetic["images"])[0]
    plain = DetectionDataset(samples, 96, train=True, seed=3)
    pasted = DetectionDataset(samples, 96, train=True, seed=3, paste=1.0)
    n_plain = sum(len(plain[i][1]) for i in range(len(plain)))
    n_pasted = sum(len(pasted[i][1]) for i in range(len(pasted)))
    assert n_pasted > n_plain
    # animals are pasted only beside animals already there: a background stays a background
    assert all(len(pasted[i][1]) == 0 for i, smp in enumerate(samples) if smp.is_negative)
    with pytest.raises(ValueError, match="paste"):
        DetectionDataset(samples, 96, train=True, paste=1.5)
    with pytest.raises(ValueError, match="paste_cover"):
        DetectionDataset(samples, 96, train=True, paste=0.3, paste_cover=-0.1)


def test_dataset_paste_max_pastes_small_groups(synthetic):
    samples = load_coco_boxes(synthetic["boxes"], synthetic["images"])[0]
    one = DetectionDataset(samples, 96, train=True, seed=3, paste=1.0)
    several = DetectionDataset(samples, 96, train=True, seed=3, paste=1.0, paste_max=3)
    added_one = [len(one[i][1]) - len(smp.boxes) for i, smp in enumerate(samples) if not smp.is_negative]
    added = [len(several[i][1]) - len(smp.boxes) for i, smp in enumerate(samples) if not smp.is_negative]
    assert max(added_one) <= 1 and max(added) > 1 and max(added) <= 3
    assert all(len(several[i][1]) == 0 for i, smp in enumerate(samples) if smp.is_negative)
    with pytest.raises(ValueError, match="paste_max"):
        DetectionDataset(samples, 96, train=True, paste=0.3, paste_max=0)


def test_epoch_order_mixes_requested_share_of_negatives():
    order = epoch_order(80, 100, 0.2, np.random.default_rng(0))
    assert len(order) == 100 and (order >= 80).sum() == 20
    assert set(order[order < 80]) == set(range(80))
    assert len(epoch_order(10, 0, 0.2, np.random.default_rng(0))) == 10


def test_epoch_order_repeats_the_extra_positives_and_keeps_the_negative_share():
    plain = epoch_order(80, 100, 0.2, np.random.default_rng(0))
    assert np.array_equal(epoch_order(80, 100, 0.2, np.random.default_rng(0), []), plain)
    order = epoch_order(80, 100, 0.2, np.random.default_rng(0), [3, 3, 7])
    assert len(order) == 104 and (order >= 80).sum() == 21
    assert (order == 3).sum() == 3 and (order == 7).sum() == 2 and (order == 5).sum() == 1
    with pytest.raises(ValueError, match="outside"):
        epoch_order(80, 100, 0.2, np.random.default_rng(0), [80])


def test_epoch_order_draws_heavier_negatives_more_often_and_equal_weights_as_before():
    plain = epoch_order(80, 100, 0.2, np.random.default_rng(0))
    assert np.array_equal(epoch_order(80, 100, 0.2, np.random.default_rng(0), negative_draw=[2.0] * 100), plain)
    draw = np.ones(100)
    draw[:10] = 20.0  # ten hard negatives (indices 80-89 of the order)
    counts = np.zeros(100)
    for epoch in range(50):
        order = epoch_order(80, 100, 0.2, np.random.default_rng(epoch), negative_draw=draw)
        assert len(order) == 100 and (order >= 80).sum() == 20 and len(set(order[order >= 80])) == 20
        counts += np.bincount(order[order >= 80] - 80, minlength=100)
    assert counts[:10].mean() > 4 * counts[10:].mean()
    assert len(epoch_order(10, 0, 0.2, np.random.default_rng(0), negative_draw=[])) == 10
    for bad in ([1.0] * 99, [0.0] + [1.0] * 99, [-1.0] * 100):
        with pytest.raises(ValueError, match="negative_draw"):
            epoch_order(80, 100, 0.2, np.random.default_rng(0), negative_draw=bad)


def test_a_sample_must_have_a_positive_draw(tmp_path):
    from labelfree.trainer.detector.data import Sample

    with pytest.raises(ValueError, match="draw"):
        Sample(tmp_path / "x.jpg", draw=0.0)


def test_targets_peak_at_the_centre_cell():
    heat, peak, box, weight = image_targets(np.array([[0.25, 0.25, 0.75, 0.75]]), np.array([0]), 1, 16, 16)
    assert heat.max() == 1.0 and heat[0, 8, 8] == 1.0 and peak[0, 8, 8] == 1.0 and peak.sum() == 1.0
    assert weight[8, 8] > 0 and np.allclose(box[8, 8], [0.25, 0.25, 0.75, 0.75])
    assert weight[0, 0] == 0


def test_load_coco_boxes_names_missing_file(tmp_path):
    (tmp_path / "boxes.json").write_text(json.dumps({"images": [{"id": 1, "file_name": "gone.jpg"}],
                                                     "annotations": [], "categories": [{"id": 1, "name": "x"}]}))
    with pytest.raises(ValueError, match="gone.jpg"):
        load_coco_boxes(tmp_path / "boxes.json", tmp_path)


def test_load_coco_boxes_reads_pixels_and_negatives(synthetic):
    samples, names, ids = load_coco_boxes(synthetic["boxes"], synthetic["images"])
    assert names == ["blob"] and ids == [1]
    assert sum(s.is_negative for s in samples) == 2
    first = samples[0]
    assert np.allclose(first.boxes, synthetic["truths"][first.path.relative_to(synthetic["images"]).as_posix()])


def test_load_coco_boxes_leaves_out_boxes_under_a_share_of_the_image_top(tmp_path):
    from PIL import Image

    Image.new("RGB", (40, 40)).save(tmp_path / "a.png")
    anns = [{"id": i, "image_id": 1, "bbox": [i, i, 10, 10], "score": s, "category_id": 1}
            for i, s in enumerate((0.9, 0.5, 0.2), start=1)]  # a region box, a second one, a candidate
    (tmp_path / "boxes.json").write_text(json.dumps({"images": [{"id": 1, "file_name": "a.png"}],
                                                     "annotations": anns, "categories": [{"id": 1, "name": "x"}]}))
    assert len(load_coco_boxes(tmp_path / "boxes.json", tmp_path)[0][0].boxes) == 3
    kept = load_coco_boxes(tmp_path / "boxes.json", tmp_path, min_relative_score=0.5)[0][0]
    assert np.allclose(kept.boxes, [[1, 1, 11, 11], [2, 2, 12, 12]])
    soft = load_coco_boxes(tmp_path / "boxes.json", tmp_path, min_relative_score=0.5, soft=True)[0][0]
    assert len(soft.boxes) == 3 and np.allclose(soft.weights, [1.0, 1.0, 0.2 / 0.9])


def test_soft_box_teaches_its_weight_at_the_centre_and_yields_cells_to_the_label():
    boxes = np.array([[0.1, 0.1, 0.9, 0.9], [0.3, 0.3, 0.7, 0.7]], np.float32)  # a label, a fragment inside it
    heat, peak, box, weight = image_targets(boxes, np.array([0, 0]), 1, 16, 16, np.array([1.0, 0.25]))
    assert peak[0, 8, 8] == 1.0 and np.isclose(peak.sum(), 1.0)  # same centre cell: the label's peak wins
    assert np.allclose(box[8, 8], boxes[0])  # the label owns the shared regression cells
    off = np.array([[0.05, 0.05, 0.45, 0.45], [0.55, 0.55, 0.95, 0.95]], np.float32)
    heat, peak, box, weight = image_targets(off, np.array([0, 0]), 1, 16, 16, np.array([1.0, 0.25]))
    assert peak[0, 4, 4] == 1.0 and np.isclose(peak[0, 12, 12], 0.25) and np.isclose(heat[0, 12, 12], 0.25)
    assert np.isclose(weight[12, 12], 0.25 * weight[4, 4])  # and its regression counts for its weight
    with pytest.raises(ValueError, match="weights"):
        image_targets(off, np.array([0, 0]), 1, 16, 16, np.array([1.0, 1.5]))


def test_quality_focal_loss_pulls_a_soft_centre_to_its_weight():
    import torch

    from labelfree.trainer.detector.loss import focal_heat_loss

    target = torch.zeros(1, 1, 4, 4)
    peak = torch.zeros(1, 1, 4, 4)
    target[0, 0, 1, 1] = peak[0, 0, 1, 1] = 0.3
    logits = torch.zeros(1, 1, 4, 4, requires_grad=True)
    optimiser = torch.optim.SGD([logits], lr=2.0)
    for _ in range(300):
        optimiser.zero_grad()
        focal_heat_loss(logits, target, 1.0, peak).backward()
        optimiser.step()
    p = torch.sigmoid(logits.detach())
    assert abs(float(p[0, 0, 1, 1]) - 0.3) < 0.05 and float(p[0, 0, 3, 3]) < 0.2
    hard = target.eq(0.3).float()  # with y = 1 the loss is CenterNet's
    assert torch.isclose(focal_heat_loss(logits.detach(), hard, 1.0), focal_heat_loss(logits.detach(), hard, 1.0, hard))


def test_dataset_carries_weights_through_augment_and_mosaic(synthetic):
    samples = load_coco_boxes(synthetic["boxes"], synthetic["images"])[0]
    soft = [s.__class__(s.path, s.boxes, s.labels, np.full(len(s.boxes), 0.5, np.float32)) for s in samples]
    for mosaic_p in (0.0, 1.0):
        dataset = DetectionDataset(soft, 96, train=True, seed=1, mosaic=mosaic_p)
        for i in range(len(dataset)):
            _, norm, _, weights = dataset[i]
            assert len(weights) == len(norm) and (weights.numpy() == 0.5).all()
