import numpy as np
import torch

from labelfree.trainer.detector.calibrate import MIN_EACH, fit_score_calibration


def _split(rng, n_images: int, found: float):
    """Held-out images of one animal each: the top detection sits on it at score ``found``; four
    weaker detections elsewhere score 0.02-0.2 (what a converged heat map gives a clear animal)."""
    truths, boxes, scores = [], [], []
    for _ in range(n_images):
        truth = np.array([[0.3, 0.3, 0.7, 0.7]])
        misses = rng.uniform(0.0, 0.2, (4, 2))
        boxes.append(np.concatenate([truth + rng.normal(0, 0.01, (1, 4)), np.hstack([misses, misses + 0.1])]))
        scores.append(np.concatenate([[found + rng.uniform(-0.05, 0.05)], rng.uniform(0.02, 0.2, 4)]))
        truths.append(truth)
    return boxes, scores, truths


def test_calibration_lifts_an_unsure_but_right_detector():
    boxes, scores, truths = _split(np.random.default_rng(0), 40, found=0.55)
    fit = fit_score_calibration(boxes, scores, truths)
    assert fit["fitted"] and fit["n_matched"] == 40 and fit["brier_after"] < fit["brier_before"]
    z = np.log(0.55 / 0.45)
    assert 1 / (1 + np.exp(-(fit["scale"] * z + fit["bias"]))) > 0.9  # a found animal now scores high
    z_miss = np.log(0.1 / 0.9)
    assert 1 / (1 + np.exp(-(fit["scale"] * z_miss + fit["bias"]))) < 0.1  # and a miss stays low


def test_calibration_falls_back_to_identity_on_a_tiny_split():
    boxes, scores, truths = _split(np.random.default_rng(1), MIN_EACH - 1, found=0.6)
    fit = fit_score_calibration(boxes, scores, truths)
    assert not fit["fitted"] and (fit["scale"], fit["bias"]) == (1.0, 0.0) and "matched" in fit["reason"]


def test_export_model_bakes_in_the_affine_without_moving_peaks(trained):
    from labelfree.trainer.detector.model import ExportModel
    from tests.trainer.detector.conftest import SIZE
    from tests.trainer.detector.test_export import _load_detector

    detector = _load_detector(trained["dir"], trained["config"])
    images = torch.from_numpy(np.random.default_rng(2).integers(0, 256, (2, SIZE, SIZE, 3), dtype=np.uint8))
    with torch.no_grad():
        plain_boxes, plain_scores, _ = ExportModel(detector, 20)(images)
        boxes, scores, _ = ExportModel(detector, 20, score_affine=(2.5, 1.0))(images)
    assert torch.equal(boxes, plain_boxes)
    want = torch.sigmoid(2.5 * torch.logit(plain_scores.double()) + 1.0).float()
    assert torch.allclose(scores, want, atol=1e-4)


def test_build_records_why_scores_were_not_calibrated(trained):
    # the shared fixture trains with no held-out split: nothing to calibrate on
    record = trained["manifest"]["training"]["score_calibration"]
    assert record == {"fitted": False, "reason": "no held-out images"}


def test_build_does_not_calibrate_without_held_out_backgrounds(synthetic):
    from labelfree.trainer.detector.build import _calibrate
    from labelfree.trainer.detector.data import load_coco_boxes
    from labelfree.trainer.detector.train import TrainConfig

    animals = [s for s in load_coco_boxes(synthetic["boxes"], synthetic["images"])[0] if not s.is_negative]
    record = _calibrate(None, animals, TrainConfig(input_size=96), 3)
    assert not record["fitted"] and "no held-out negatives" in record["reason"]
