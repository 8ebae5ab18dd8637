"""trainer.classifier: phash groups, grouped split, CV, head folding, metrics."""

from __future__ import annotations

import numpy as np
import pytest

from labelfree.trainer import classifier as clf


def _blobs(rng, n_per_class=40, dim=16, gap=3.0):
    X = np.vstack([rng.normal(0, 1, (n_per_class, dim)), rng.normal(0, 1, (n_per_class, dim)) + gap / np.sqrt(dim)])
    y = np.r_[np.zeros(n_per_class, int), np.ones(n_per_class, int)]
    return X.astype(np.float32), y


def test_phash_groups_join_near_duplicates_only():
    hashes = ["0000000000000000", "0000000000000003", "ffffffffffffffff", "0000000000000001", "00000000ffff0000"]
    groups = clf.phash_groups(hashes, max_distance=4)
    assert groups[0] == groups[1] == groups[3]
    assert len({groups[0], groups[2], groups[4]}) == 3


def test_group_split_keeps_each_group_on_one_side_and_stratifies():
    rng = np.random.default_rng(0)
    y = np.r_[np.zeros(60, int), np.ones(40, int)]
    groups = np.arange(100) // 2  # pairs of near-duplicates
    train, val = clf.group_split(y, groups, 0.2, rng)
    assert not set(groups[train]) & set(groups[val])
    assert len(train) + len(val) == 100 and set(y[val]) == {0, 1}


def test_group_split_rejects_bad_fraction():
    with pytest.raises(ValueError, match="val_fraction"):
        clf.group_split(np.zeros(4, int), np.arange(4), 0.7, np.random.default_rng(0))


def test_fit_head_folds_standardisation_into_raw_space():
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(1)
    X, y = _blobs(rng)
    X = X * 10 + 5  # far from standardised: the folding must undo this
    head = clf.fit_head(X, y, C=0.5)
    mean, std = X.astype(np.float64).mean(0), X.astype(np.float64).std(0) + 1e-6
    ref = LogisticRegression(C=0.5, max_iter=2000).fit((X - mean) / std, y, sample_weight=clf.balanced_weights(y))
    np.testing.assert_allclose(head.logit(X), ref.decision_function((X - mean) / std), rtol=1e-6, atol=1e-6)


def test_balanced_weights_equalise_classes():
    y = np.r_[np.zeros(30, int), np.ones(10, int)]
    w = clf.balanced_weights(y)
    assert np.isclose(w[y == 0].sum(), w[y == 1].sum())
    with pytest.raises(ValueError, match="both classes"):
        clf.balanced_weights(np.ones(5, int))


def test_cross_validation_scores_original_rows_only():
    rng = np.random.default_rng(2)
    X, y = _blobs(rng)
    n = len(y)
    X2 = np.vstack([X, X + rng.normal(0, 0.1, X.shape)])  # an "augmented" copy of every row
    y2, groups = np.tile(y, 2), np.tile(np.arange(n), 2)
    is_aug = np.r_[np.zeros(n, bool), np.ones(n, bool)]
    cv = clf.cross_validate_c(X2, y2, groups, is_aug, Cs=(0.01, 1.0), n_splits=4, rng=rng)
    assert cv["C"] in (0.01, 1.0) and set(cv["cv"]) == {"0.01", "1"}
    assert np.isfinite(cv["oof_score"][:n]).all() and np.isnan(cv["oof_score"][n:]).all()
    assert cv["cv"][f"{cv['C']:g}"]["roc_auc"] > 0.9


def test_evaluate_reports_auc_accuracy_and_calibration():
    y = np.array([0, 0, 0, 1, 1, 1])
    score = np.array([0.1, 0.2, 0.6, 0.4, 0.8, 0.9])
    m = clf.evaluate(y, score, threshold=0.5)
    assert m["roc_auc"] == pytest.approx(8 / 9) and m["accuracy"] == pytest.approx(4 / 6)
    assert 0 <= m["calibration"]["ece"] <= 1 and sum(b["n"] for b in m["calibration"]["bins"]) == 6
    perfect = clf.calibration(np.array([0.0, 1.0] * 50), np.array([0.05, 0.95] * 50), n_bins=10)
    assert perfect["ece"] == pytest.approx(0.05)


def test_curve_points_trace_the_validation_roc_and_pr():
    y = np.array([0, 0, 0, 1, 1, 1])
    score = np.array([0.1, 0.2, 0.6, 0.4, 0.8, 0.9])
    m = clf.evaluate(y, score, threshold=0.5)
    roc, pr = m["curves"]["roc"], m["curves"]["pr"]
    assert (roc["fpr"][0], roc["tpr"][0], roc["fpr"][-1], roc["tpr"][-1]) == (0, 0, 1, 1)
    assert np.trapezoid(roc["tpr"], roc["fpr"]) == pytest.approx(m["roc_auc"], abs=1e-3)
    assert pr["recall"] == sorted(pr["recall"]) and pr["recall"][-1] == 1.0 and pr["precision"][-1] == 0.5
    assert "curves" not in clf.evaluate(np.ones(4, int), np.full(4, 0.9), threshold=0.5)  # one class: no curve


def test_curve_points_stay_compact_on_large_validation_sets():
    rng = np.random.default_rng(0)
    y = np.r_[np.zeros(2000, int), np.ones(2000, int)]
    score = np.r_[rng.normal(0, 1, 2000), rng.normal(1.5, 1, 2000)]
    roc = clf.curves(y, score, max_points=40)["roc"]
    assert 2 <= len(roc["fpr"]) <= 40 and (roc["fpr"][0], roc["tpr"][-1]) == (0, 1)
    assert np.all(np.diff(roc["fpr"]) >= 0) and np.all(np.diff(roc["tpr"]) >= 0)
    from sklearn.metrics import roc_auc_score

    assert np.trapezoid(roc["tpr"], roc["fpr"]) == pytest.approx(roc_auc_score(y, score), abs=0.01)


def test_choose_threshold_separates_separable_scores():
    y = np.array([0, 0, 1, 1])
    t = clf.choose_threshold(y, np.array([0.1, 0.3, 0.7, 0.9]))
    assert 0.3 < t <= 0.7


@pytest.mark.parametrize("n_pos,n_neg,match", [(0, 20, "positive class is empty"), (20, 3, "negative class has 3")])
def test_class_size_errors_name_the_class(n_pos, n_neg, match):
    with pytest.raises(ValueError, match=match):
        clf.check_class_sizes(n_pos, n_neg)
