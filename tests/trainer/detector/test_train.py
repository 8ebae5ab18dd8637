import numpy as np
import pytest

from labelfree.trainer.detector.boxops import box_iou
from labelfree.trainer.detector.data import load_coco_boxes
from labelfree.trainer.detector.infer import DetectorRunner
from labelfree.trainer.detector.train import TrainConfig, train_detector


def test_overfit_recovers_known_boxes(trained, synthetic):
    runner = DetectorRunner(trained["dir"])
    samples, _, _ = load_coco_boxes(synthetic["boxes"], synthetic["images"])
    positives = [s for s in samples if not s.is_negative]
    from labelfree.core.images import load_rgb

    batch = np.stack([runner.prepare(load_rgb(s.path)) for s in positives])
    boxes, scores, _ = runner.predict(batch)
    hits = 0
    for sample, b, s in zip(positives, boxes, scores):
        truth = sample.boxes / 96.0
        top = b[: len(truth)]
        # Each known box is matched by one of the top-|truth| detections.
        hits += int((box_iou(truth, top).max(axis=1) >= 0.5).all())
        assert s[0] > 0.3
    assert hits >= len(positives) - 1, f"recovered {hits}/{len(positives)} images"


def test_negative_images_score_lower_than_positives(trained, synthetic):
    runner = DetectorRunner(trained["dir"])
    samples, _, _ = load_coco_boxes(synthetic["boxes"], synthetic["images"])
    from labelfree.core.images import load_rgb

    top = {s.is_negative: [] for s in samples}
    for s in samples:
        top[s.is_negative].append(float(runner.predict(runner.prepare(load_rgb(s.path))[None])[1][0, 0]))
    assert max(top[True]) < min(top[False])


class _Stop(Exception):
    pass


def test_resume_continues_from_the_last_epoch(synthetic, tmp_path):
    samples, _, _ = load_coco_boxes(synthetic["boxes"], synthetic["images"])
    pos = [s for s in samples if not s.is_negative]
    config = TrainConfig(input_size=64, epochs=2, min_steps=0, batch_size=4, val_fraction=0.0, top_k=20)

    def stop_after_first_epoch(share: float) -> None:
        raise _Stop

    with pytest.raises(_Stop):
        train_detector(pos, [], 1, tmp_path, config, show_progress=False, progress=stop_after_first_epoch)
    assert (tmp_path / "checkpoints" / "last.pt").is_file()
    result = train_detector(pos, [], 1, tmp_path, config, show_progress=False)
    assert [h["epoch"] for h in result.history] == [1, 2]
    with pytest.raises(ValueError, match="different config"):
        train_detector(pos, [], 1, tmp_path, TrainConfig(input_size=64, epochs=3, min_steps=0, batch_size=4, val_fraction=0.0, top_k=20),
                       show_progress=False)


def test_config_rejects_bad_values():
    with pytest.raises(ValueError, match="multiple of 32"):
        TrainConfig(input_size=100).validate()
    with pytest.raises(ValueError, match="backbone_mode"):
        TrainConfig(backbone_mode="half").validate()


def test_config_rejects_top_k_beyond_the_heat_map():
    with pytest.raises(ValueError, match="top_k=100"):
        TrainConfig(input_size=64).validate()


def test_relabel_with_the_trained_detector_finds_the_known_boxes(trained, synthetic, tmp_path):
    from tests.trainer.detector.test_export import _load_detector
    from labelfree.trainer.detector.selftrain import RoundGraph, relabel

    samples, _, _ = load_coco_boxes(synthetic["boxes"], synthetic["images"])
    positives = [s for s in samples if not s.is_negative]
    graph = RoundGraph(_load_detector(trained["dir"], trained["config"]), tmp_path,
                       input_size=trained["config"].input_size)
    new = relabel(graph, positives, relative=0.5)
    assert [s.path for s in new] == [s.path for s in positives]
    good = sum(len(n.boxes) == len(o.boxes) and (box_iou(o.boxes, n.boxes).max(axis=1) >= 0.5).all()
               for o, n in zip(positives, new))
    assert good >= len(positives) - 1
    with pytest.raises(ValueError, match="relative"):
        relabel(graph, positives, relative=0.0)


def test_weigh_negatives_draws_the_ones_the_detector_fires_on_more_often(trained, synthetic, tmp_path):
    """A photo of the object passed as a negative scores high, so it is drawn more often than a blank one."""
    from tests.trainer.detector.test_export import _load_detector
    from labelfree.trainer.detector.data import Sample
    from labelfree.trainer.detector.selftrain import RoundGraph, weigh_negatives

    samples, _, _ = load_coco_boxes(synthetic["boxes"], synthetic["images"])
    lookalikes = [Sample(s.path) for s in samples if not s.is_negative][:3]
    blanks = [s for s in samples if s.is_negative][:3]
    graph = RoundGraph(_load_detector(trained["dir"], trained["config"]), tmp_path,
                       input_size=trained["config"].input_size)
    weighed, tops = weigh_negatives(graph, lookalikes + blanks, boost=10.0)
    assert [s.path for s in weighed] == [s.path for s in lookalikes + blanks]
    assert all(len(s.boxes) == 0 for s in weighed)
    assert np.allclose([s.draw for s in weighed], 1.0 + 10.0 * tops)
    assert min(s.draw for s in weighed[:3]) > max(s.draw for s in weighed[3:])
    with pytest.raises(ValueError, match="boost"):
        weigh_negatives(graph, blanks, boost=-1.0)


def test_soft_relabel_keeps_the_weaker_peaks_as_ranked_candidates(trained, synthetic, tmp_path):
    from tests.trainer.detector.test_export import _load_detector
    from labelfree.trainer.detector.selftrain import RoundGraph, relabel

    samples, _, _ = load_coco_boxes(synthetic["boxes"], synthetic["images"])
    positives = [s for s in samples if not s.is_negative]
    detector = _load_detector(trained["dir"], trained["config"])
    graph = RoundGraph(detector, tmp_path, input_size=trained["config"].input_size)
    hard = relabel(graph, positives, relative=0.5)
    soft = relabel(graph, positives, relative=0.5, soft=True)
    for h, s in zip(hard, soft):
        labels = s.weights == 1.0
        assert np.allclose(s.boxes[labels], h.boxes) and (s.weights[~labels] < 0.5).all()
        assert len(s.boxes) >= len(h.boxes) and (h.weights == 1.0).all()


def test_the_default_trains_the_last_backbone_stage_only(synthetic, tmp_path):
    """``auto`` is ``top``: the last stride-32 stage adapts, the earlier stages keep their pretrained weights."""
    import torch

    from labelfree.core.backbone import load_backbone

    samples, _, _ = load_coco_boxes(synthetic["boxes"], synthetic["images"])
    pos = [s for s in samples if not s.is_negative]
    config = TrainConfig(input_size=64, epochs=1, min_steps=0, batch_size=4, val_fraction=0.0, top_k=20)
    assert config.backbone_mode == "auto"
    trained = train_detector(pos, [], 1, tmp_path, config, show_progress=False).detector.backbone.state_dict()
    pretrained = load_backbone(config.backbone).state_dict()
    changed = {k for k, v in pretrained.items() if v.is_floating_point() and not torch.equal(v, trained[k])}
    last = load_backbone(config.backbone)._taps[-2] + 1
    assert changed and all(k.startswith("blocks.") and int(k.split(".")[1]) >= last for k in changed), sorted(changed)[:5]


def test_top_stage_on_onnx_runtime_features_matches_pytorch(tmp_path):
    """On CPU a ``top`` run computes the frozen stages in ONNX Runtime and the last stage in PyTorch: the
    pyramid must be the backbone's own, and gradients must reach the last stage."""
    import torch

    from labelfree.core.backbone import load_backbone
    from labelfree.trainer.detector.model import Detector
    from labelfree.trainer.detector.train import _Features, _set_trainable

    detector = Detector(load_backbone("efficientnet-lite0"), 1).eval()
    _set_trainable(detector, "top")
    images = torch.randint(0, 256, (2, 64, 64, 3), dtype=torch.uint8)
    mixed = _Features(detector, 64, torch.device("cpu"), True, tmp_path, 1, "top")(images)
    plain = _Features(detector, 64, torch.device("cpu"), False, tmp_path, 1, "top")(images)
    assert [f.shape for f in mixed] == [f.shape for f in plain]
    for a, b in zip(mixed, plain):
        assert torch.allclose(a, b, atol=1e-3, rtol=1e-3), float((a - b).abs().max())
    mixed[-1].sum().backward()
    assert detector.backbone.blocks[-1]._project_conv.weight.grad is not None
    assert detector.backbone.blocks[0]._project_conv.weight.grad is None


def test_auto_falls_back_to_frozen_for_a_backbone_without_a_top_stage(synthetic, tmp_path):
    samples, _, _ = load_coco_boxes(synthetic["boxes"], synthetic["images"])
    pos = [s for s in samples if not s.is_negative]
    config = TrainConfig(input_size=64, epochs=1, min_steps=0, batch_size=4, val_fraction=0.0, top_k=20,
                         backbone="mobilenetv2")
    result = train_detector(pos, [], 1, tmp_path, config, show_progress=False)
    assert result.history and not any(p.requires_grad for p in result.detector.backbone.parameters())
    with pytest.raises(ValueError, match="top"):
        train_detector(pos, [], 1, tmp_path / "top", TrainConfig(**{**config.__dict__, "backbone_mode": "top"}),
                       show_progress=False)


def test_weight_average_trains_resumes_and_checks_its_decay(synthetic, tmp_path):
    samples, _, _ = load_coco_boxes(synthetic["boxes"], synthetic["images"])
    pos = [s for s in samples if not s.is_negative]
    config = TrainConfig(input_size=64, epochs=2, min_steps=0, batch_size=4, val_fraction=0.0, top_k=20, ema=0.9)

    def stop_after_first_epoch(share: float) -> None:
        raise _Stop

    with pytest.raises(_Stop):
        train_detector(pos, [], 1, tmp_path, config, show_progress=False, progress=stop_after_first_epoch)
    import torch

    state = torch.load(tmp_path / "checkpoints" / "last.pt", weights_only=False)
    head = "head.heat.2.weight"
    assert not torch.equal(state["ema"][head], state["model"][head])  # the average lags the live weights
    result = train_detector(pos, [], 1, tmp_path, config, show_progress=False)
    assert [h["epoch"] for h in result.history] == [1, 2]
    with pytest.raises(ValueError, match="ema"):
        TrainConfig(ema=1.0).validate()


def test_keep_last_returns_the_final_average_and_best_the_chosen_epoch(synthetic, tmp_path):
    import torch

    samples, _, _ = load_coco_boxes(synthetic["boxes"], synthetic["images"])
    pos = [s for s in samples if not s.is_negative]
    base = dict(input_size=64, epochs=3, min_steps=0, batch_size=4, val_fraction=0.3, top_k=20, ema=0.9)
    last = train_detector(pos, [], 1, tmp_path / "last", TrainConfig(**base), show_progress=False)
    final = torch.load(tmp_path / "last" / "checkpoints" / "last.pt", weights_only=False)["ema"]
    head = "head.heat.2.weight"
    assert torch.equal(last.detector.state_dict()[head], final[head].cpu())
    assert last.metrics["epoch"] == 3 == last.history[-1]["epoch"]

    best = train_detector(pos, [], 1, tmp_path / "best", TrainConfig(**base, keep="best"), show_progress=False)
    chosen = torch.load(tmp_path / "best" / "checkpoints" / "best.pt", weights_only=False)
    assert torch.equal(best.detector.state_dict()[head], chosen["model"][head].cpu())
    assert best.metrics["epoch"] == chosen["record"]["epoch"]
    with pytest.raises(ValueError, match="keep"):
        TrainConfig(keep="middle").validate()


def test_small_datasets_train_at_least_min_steps(synthetic, tmp_path):
    samples, _, _ = load_coco_boxes(synthetic["boxes"], synthetic["images"])
    pos = [s for s in samples if not s.is_negative]
    assert TrainConfig().min_steps == 800  # the floor the small-dataset bench chose (MIN_STEPS)
    config = TrainConfig(input_size=64, epochs=1, min_steps=12, batch_size=4, val_fraction=0.0, top_k=20)
    result = train_detector(pos, [], 1, tmp_path, config, show_progress=False)
    assert result.history[-1]["step"] >= 12 and len(result.history) > 1


def test_group_repeat_shows_photos_with_several_boxes_more_often(synthetic, tmp_path):
    samples, _, _ = load_coco_boxes(synthetic["boxes"], synthetic["images"])
    pos = [s for s in samples if not s.is_negative]
    groups = sum(len(s.boxes) >= 2 for s in pos)
    assert 0 < groups < len(pos)
    base = dict(input_size=64, epochs=1, min_steps=0, batch_size=1, val_fraction=0.0, top_k=20)
    once = train_detector(pos, [], 1, tmp_path / "once", TrainConfig(**base), show_progress=False)
    thrice = train_detector(pos, [], 1, tmp_path / "thrice", TrainConfig(**base, group_repeat=3), show_progress=False)
    assert once.history[-1]["step"] == len(pos)
    assert thrice.history[-1]["step"] == len(pos) + 2 * groups
    with pytest.raises(ValueError, match="group_repeat"):
        TrainConfig(group_repeat=0).validate()


def test_a_ten_step_schedule_trains(synthetic, tmp_path):
    # OneCycleLR divided by zero when a tenth of the steps was exactly one step.
    samples, _, _ = load_coco_boxes(synthetic["boxes"], synthetic["images"])
    pos = [s for s in samples if not s.is_negative]
    config = TrainConfig(input_size=64, epochs=1, min_steps=0, max_steps=10, batch_size=1, val_fraction=0.0,
                         top_k=20)
    result = train_detector(pos + pos, [], 1, tmp_path, config, show_progress=False)
    assert result.history[-1]["step"] == 10
