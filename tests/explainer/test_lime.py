"""The vectorised LIME explainer on synthetic images with a known answer."""

import numpy as np
import pytest

from labelfree.explainer.lime import explain, fill_image, lime_kernel, sample_masks, weighted_ridge
from tests.explainer.synthetic import red_logit, scene


def test_red_square_superpixels_get_the_largest_weights():
    image = scene(64, ((20, 20, 20),))
    e = explain(image, red_logit, rng=np.random.default_rng(0), n_segments=40, n_samples=64, fill="mean")
    top = np.argmax(e.weights)
    ys, xs = np.nonzero(e.segments == top)
    assert 20 <= xs.mean() < 40 and 20 <= ys.mean() < 40
    assert e.r2 > 0.9  # the toy classifier is linear in the shown red pixels
    assert e.base_score == pytest.approx(red_logit(image[None])[0])


def test_fixed_seed_gives_identical_explanations():
    image = scene(48, ((10, 10, 16),))
    a = explain(image, red_logit, rng=np.random.default_rng(7), n_segments=20, n_samples=32)
    b = explain(image, red_logit, rng=np.random.default_rng(7), n_segments=20, n_samples=32)
    np.testing.assert_array_equal(a.weights, b.weights)
    np.testing.assert_array_equal(a.segments, b.segments)


def test_masks_come_from_rng_and_keep_the_unperturbed_row():
    masks = sample_masks(10, 5, np.random.default_rng(1), p_on=0.3)
    assert masks.shape == (10, 5) and masks.dtype == bool and masks[0].all()
    np.testing.assert_array_equal(masks, sample_masks(10, 5, np.random.default_rng(1), p_on=0.3))


def test_weighted_ridge_recovers_a_linear_model_with_intercept():
    rng = np.random.default_rng(0)
    x = rng.random((200, 6)) < 0.5
    truth = np.array([3.0, -1.0, 0.0, 2.0, 0.5, 0.0])
    y = x @ truth + 4.0
    coef, intercept, r2 = weighted_ridge(x, y, lime_kernel(x), alpha=1e-6)
    np.testing.assert_allclose(coef, truth, atol=1e-4)
    assert intercept == pytest.approx(4.0, abs=1e-4) and r2 == pytest.approx(1.0)


@pytest.mark.parametrize("fill", ["blur", "mean", "grey", (0, 0, 255)])
def test_fill_is_a_parameter(fill):
    out = fill_image(scene(32), fill)
    assert out.shape == (32, 32, 3) and out.dtype == np.uint8


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="fill"):
        fill_image(scene(16), "plaid")
    with pytest.raises(ValueError, match="image"):
        explain(np.zeros((8, 8), np.uint8), red_logit, rng=np.random.default_rng(0))
    with pytest.raises(ValueError, match="n_samples"):
        explain(scene(16), red_logit, rng=np.random.default_rng(0), n_samples=1)
