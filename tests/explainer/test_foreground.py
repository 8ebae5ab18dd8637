"""The foreground method: streaming Fisher fit, known-answer boxes, determinism, old-graph errors."""

import json
import shutil

import numpy as np
import pytest
from PIL import Image

from labelfree.core.errors import LabelfreeError
from labelfree.explainer.batch import ModelLabeller, fit_foreground, label_paths
from labelfree.explainer.boxes import box_iou
from labelfree.explainer.foreground import ForegroundModel, ForegroundStats
from labelfree.explainer.labeller import LabelConfig
from tests.explainer.synthetic import scene

FG = LabelConfig(method="foreground", cam_sizes=(128,), fg_side=128)


def _cells(rng, n, shift):
    """(3, n, 1) features of one class: Gaussian around ``shift`` on channel 0."""
    x = rng.normal(size=(3, n, 1))
    x[0] += shift
    return x


def test_stats_fit_separates_two_classes_and_merges_like_one_pass():
    rng = np.random.default_rng(0)
    images = []
    for _ in range(6):
        fg, bg = _cells(rng, 20, 4.0), _cells(rng, 30, 0.0)
        images.append((np.concatenate([fg, bg], axis=1), np.r_[np.ones(20, bool), np.zeros(30, bool)][:, None]))
    whole, a, b = ForegroundStats(3), ForegroundStats(3), ForegroundStats(3)
    for i, (f, y) in enumerate(images):
        whole.add(f, y)
        (a if i < 3 else b).add(f, y)
    merged = ForegroundStats.from_bytes(a.merge(b).to_bytes())
    m1, m2 = whole.fit(64), merged.fit(64)
    np.testing.assert_allclose(m1.coef, m2.coef, rtol=1e-6)
    assert m1.n_images == 6 and m1.n_cells == 300 and m1.fg_share == pytest.approx(0.4)
    assert abs(m1.coef[0]) > 5 * np.abs(m1.coef[1:]).max() and m1.coef[0] > 0
    f, y = images[0]
    assert ((m1.evidence(f) > 0) == y).mean() >= 0.9
    assert ForegroundModel.from_dict(json.loads(json.dumps(m1.to_dict()))).to_dict() == m1.to_dict()


def test_self_training_pulls_bled_labels_back_and_stops_when_labels_settle():
    from labelfree.explainer.foreground import features_from_bytes, features_to_bytes, relabelled_stats, self_train

    rng = np.random.default_rng(1)
    images, truths = [], []
    for _ in range(8):  # the "CAM" also calls the background cells nearest the animal foreground (bleed)
        fg, bg = _cells(rng, 20, 3.0), _cells(rng, 40, 0.0)
        f = np.concatenate([fg, bg], axis=1)
        truth = np.r_[np.ones(20, bool), np.zeros(40, bool)][:, None]
        bled = truth | (f[0] > 1.0)
        images.append((f, bled))
        truths.append(truth)
    stats = ForegroundStats(3)
    for f, y in images:
        stats.add(f, y)
    first = stats.fit(64)
    kept = [features_to_bytes(f) for f, _ in images]
    calls = []

    def relabel(model, previous):
        calls.append(model.rounds)
        return relabelled_stats(map(features_from_bytes, kept), model, previous)

    trained = self_train(first, relabel, max_rounds=20, tol=0.01)
    agree = lambda m: np.mean([(m.labels(f) == t).mean() for (f, _), t in zip(images, truths)])  # noqa: E731
    assert agree(trained) > agree(first) and 1 <= trained.rounds < 20  # it moved, and it stopped by itself
    assert calls == list(range(trained.rounds + 1))  # one relabel per refit, plus the one that found it settled
    assert self_train(first, relabel, max_rounds=0) is first
    assert ForegroundModel.from_dict({k: v for k, v in first.to_dict().items() if k != "rounds"}).rounds == 0
    with pytest.raises(ValueError, match="fg_rounds"):
        LabelConfig(fg_rounds=-1)


def test_stats_of_one_class_give_a_constant_model_and_refuse_bad_shapes():
    stats = ForegroundStats(3)
    with pytest.raises(ValueError, match="at least one image"):
        stats.fit(64)
    stats.add(np.ones((3, 2, 2)), np.ones((2, 2), bool))
    model = stats.fit(64)  # CAM positive everywhere: everything is foreground
    assert (model.evidence(np.random.default_rng(0).normal(size=(3, 4, 4))) > 0).all()
    two = ForegroundStats(3, fine_dim=3)
    two.add(np.ones((3, 2, 2)), np.ones((2, 2), bool))
    two.fine.add(np.ones((3, 4, 4)), np.ones((4, 4), bool))
    both = two.fit(64)  # a constant fine level adds its sign, not a huge "prior-free" likelihood
    assert both.fine.prior == 0.0
    assert (both.evidence_map(np.zeros((3, 2, 2)), np.zeros((3, 4, 4))) > 0).all()
    with pytest.raises(ValueError, match="do not match"):
        stats.add(np.zeros((4, 2, 2)), np.ones((2, 2), bool))


@pytest.fixture
def image_dir(tmp_path):
    Image.fromarray(scene(128, ((40, 40, 40),))).save(tmp_path / "one.png")
    Image.fromarray(scene(128, ((8, 12, 36), (84, 80, 36)))).save(tmp_path / "two.png")
    Image.fromarray(scene(128, ((70, 10, 30),))).save(tmp_path / "three.png")
    Image.fromarray(scene(64, ())).save(tmp_path / "blank.png")
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    return tmp_path


def _items(image_dir):
    return [(p.name, str(p)) for p in sorted(image_dir.iterdir())]


def test_foreground_two_squares_give_two_boxes_and_blank_none(red_model_dir, image_dir):
    labeller = ModelLabeller(red_model_dir, FG)
    fitted = fit_foreground(labeller, [p for _, p in _items(image_dir)])
    assert fitted.n_images == 3  # blank (absent) and broken are left out of the fit
    records = {r["key"]: r for r in label_paths(labeller, _items(image_dir))}
    assert records["blank.png"]["boxes"] == [] and records["broken.jpg"]["error"]
    assert box_iou(np.array(records["one.png"]["boxes"][:1]), np.array([[40, 40, 80, 80]]))[0, 0] > 0.5
    two = np.array(records["two.png"]["boxes"])
    assert len(two) == 2
    assert box_iou(two, np.array([[8, 12, 44, 48], [84, 80, 120, 116]])).max(axis=0).min() > 0.5


def test_foreground_is_deterministic(red_model_dir, image_dir):
    runs = []
    for seed in (0, 0, 7):  # the method draws no random numbers: any seed, same boxes
        labeller = ModelLabeller(red_model_dir, FG)
        fit_foreground(labeller, [p for _, p in _items(image_dir)])
        runs.append(list(label_paths(labeller, _items(image_dir), seed=seed)))
    assert runs[0] == runs[1] == runs[2]


def test_foreground_needs_a_fit_and_a_graph_with_a_head(red_model_dir, tmp_path):
    labeller = ModelLabeller(red_model_dir, FG)
    with pytest.raises(ValueError, match="fit_foreground"):
        labeller.label(scene(128), np.random.default_rng(0))
    import onnx

    graph = onnx.load(str(red_model_dir / "model.onnx"))
    for node in graph.graph.node:  # an old-style graph: no Mul(coef) head
        if node.op_type == "Mul" and "coef" in node.input:
            node.input[list(node.input).index("coef")] = "coef_renamed"
    for init in graph.graph.initializer:
        if init.name == "coef":
            init.name = "coef_renamed"
    old = tmp_path / "old"
    old.mkdir()
    onnx.save(graph, str(old / "model.onnx"))
    shutil.copy(red_model_dir / "manifest.json", old / "manifest.json")
    with pytest.raises(LabelfreeError, match="--method cam"):
        fit_foreground(ModelLabeller(old, FG), [_one(tmp_path)])


def _one(tmp_path):
    path = tmp_path / "one.png"
    Image.fromarray(scene(128, ((40, 40, 40),))).save(path)
    return str(path)


def test_candidates_rank_below_the_region_boxes_and_leave_them_unchanged(red_model_dir, image_dir):
    from dataclasses import replace

    from labelfree.explainer.labeller import CANDIDATE_WEIGHT

    labeller = ModelLabeller(red_model_dir, replace(FG, fg_side=448, candidate_side=None))
    fg = fit_foreground(labeller, [p for _, p in _items(image_dir)])
    plain = {r["key"]: r for r in label_paths(labeller, _items(image_dir))}
    with_candidates = {r["key"]: r for r in label_paths(
        ModelLabeller(red_model_dir, replace(FG, fg_side=448, candidate_side=640), foreground=fg), _items(image_dir))}
    added = 0
    for key, record in plain.items():
        more = with_candidates[key]
        n = len(record["boxes"])
        assert more["boxes"][:n] == record["boxes"] and more["scores"][:n] == record["scores"]
        if len(more["boxes"]) > n:
            assert max(more["scores"][n:]) < CANDIDATE_WEIGHT * min(record["scores"]) + 1e-6
            added += 1
    assert added > 0  # the 5x finer grid splits a synthetic square: candidates do appear
    with pytest.raises(ValueError, match="candidate_side"):
        LabelConfig(candidate_side=100)


def test_two_levels_fit_add_their_evidence_on_the_fine_grid_and_serialise(red_model_dir, tmp_path):
    from labelfree.explainer.foreground import features_from_bytes, features_to_bytes

    for i, squares in enumerate([((40, 40, 40),), ((8, 12, 36), (84, 80, 36)), ((70, 10, 30),)]):
        Image.fromarray(scene(128, squares)).save(tmp_path / f"{i}.png")
    labeller = ModelLabeller(red_model_dir, FG)
    model = fit_foreground(labeller, sorted(tmp_path.glob("*.png")))
    assert model.fine is not None and model.fine.coef.shape == (3,) and model.fine.n_images == 3
    coarse, fine = labeller.model.taps(np.asarray(Image.open(tmp_path / "0.png").convert("RGB"))[None])
    both = model.evidence_map(coarse[0], fine[0])
    assert both.shape == fine.shape[2:] == (32, 32)  # the fine grid
    want = np.asarray(Image.fromarray(model.evidence(coarse[0])).resize((32, 32), Image.BILINEAR))
    np.testing.assert_allclose(both, want + model.fine.evidence(fine[0]) - model.fine.prior, rtol=1e-5, atol=1e-5)
    assert both[12, 12] > 0 > both[28, 4]  # inside the square, on the background
    with pytest.raises(ValueError, match="stride-16"):
        model.evidence_map(coarse[0])
    again = ForegroundModel.from_dict(json.loads(json.dumps(model.to_dict())))
    assert again.to_dict() == model.to_dict() and again.fine is not None
    coarse_only = ForegroundModel.from_dict({k: v for k, v in model.to_dict().items() if k != "fine"})
    assert coarse_only.fine is None and coarse_only.evidence_map(coarse[0]).shape == (16, 16)  # older fits load
    kept = features_to_bytes(coarse[0], fine[0])
    np.testing.assert_allclose(features_from_bytes(kept, 1), fine[0], atol=1e-3)
    assert features_from_bytes(kept).shape == coarse[0].shape
    flat = fit_foreground(ModelLabeller(red_model_dir, LabelConfig(**{**FG.__dict__, "fg_fine": False})),
                          sorted(tmp_path.glob("*.png")))
    assert flat.fine is None  # fg_fine off: the coarse level alone, as before
