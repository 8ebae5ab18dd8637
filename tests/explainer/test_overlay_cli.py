"""Overlay PNGs and the `explain` command on a folder (exit codes, COCO output, skipped files)."""

import json

import numpy as np
from PIL import Image
from typer.testing import CliRunner

from labelfree.explainer.cli import app
from labelfree.explainer.labeller import CANDIDATE_WEIGHT, LabelConfig, label_image
from labelfree.explainer.overlay import overlay_png, save_overlay
from tests.explainer.synthetic import red_logit, scene


def test_overlay_png_has_the_image_size(tmp_path):
    image = scene(64, ((20, 20, 20),))
    out = label_image(image, rng=np.random.default_rng(0), predict_logit=red_logit, model_side=64,
                      config=LabelConfig(method="lime", n_samples=64, n_segments=20, fill="mean"))
    path = save_overlay(image, out, tmp_path / "o" / "x.png")
    assert Image.open(path).size == (64, 64)


def test_stored_overlay_is_a_palette_png_no_larger_than_a_tile_with_the_box_where_it_was():
    import io

    image = scene(200, ((60, 60, 30),))
    out = label_image(image, rng=np.random.default_rng(0), predict_logit=red_logit, model_side=64,
                      config=LabelConfig(method="lime", n_samples=64, n_segments=20, fill="mean"))
    assert len(out.boxes) == 1
    png = Image.open(io.BytesIO(overlay_png(image, out, max_side=100)))
    assert png.format == "PNG" and png.mode == "P" and png.size == (100, 100)
    # the yellow box outline, drawn at half scale: its left edge crosses the box's middle row
    x1, y1, x2, y2 = (out.boxes[0] / 2).round().astype(int)
    row = np.asarray(png.convert("RGB"))[(y1 + y2) // 2]
    assert row[x1][0] > 200 and row[x1][1] > 180 and row[x1][2] < 80


def test_explain_command_writes_coco_and_reports_skipped(red_model_dir, tmp_path):
    images = tmp_path / "imgs"
    (images / "sub").mkdir(parents=True)
    Image.fromarray(scene(128, ((40, 40, 40),))).save(images / "sub" / "one.png")
    (images / "bad.jpg").write_bytes(b"nope")
    out = tmp_path / "boxes.json"
    result = CliRunner().invoke(app, ["--model", str(red_model_dir), "--images", str(images), "--out", str(out),
                                      "--overlays", str(tmp_path / "ov")])
    assert result.exit_code == 0, result.output
    data = json.loads(out.read_text())
    assert [im["file_name"] for im in data["images"]] == ["sub/one.png"]
    assert data["skipped"][0]["file_name"] == "bad.jpg"
    # one region box; the finer grid's candidates (if any) rank below half of it
    scores = sorted((a["score"] for a in data["annotations"]), reverse=True)
    assert scores and sum(s >= CANDIDATE_WEIGHT * scores[0] for s in scores) == 1
    assert (tmp_path / "ov" / "sub" / "one.png.png").is_file()


def test_explain_command_rejects_a_missing_model(tmp_path):
    result = CliRunner().invoke(app, ["--model", str(tmp_path), "--images", str(tmp_path), "--out", "x.json"])
    assert result.exit_code == 2


def test_explain_foreground_fits_on_fit_images_saves_and_reloads_the_model(red_model_dir, tmp_path):
    pool, images = tmp_path / "pool", tmp_path / "imgs"
    pool.mkdir()
    images.mkdir()
    Image.fromarray(scene(128, ((40, 40, 40),))).save(pool / "a.png")
    Image.fromarray(scene(128, ((8, 12, 36), (84, 80, 36)))).save(pool / "b.png")
    Image.fromarray(scene(128, ((70, 10, 30),))).save(images / "c.png")
    base = ["--model", str(red_model_dir), "--images", str(images), "--method", "foreground"]
    fitted = tmp_path / "fg.json"
    first = CliRunner().invoke(app, base + ["--out", str(tmp_path / "1.json"), "--fit-images", str(pool),
                                            "--save-foreground", str(fitted)])
    assert first.exit_code == 0, first.output
    assert json.loads(fitted.read_text())["n_images"] == 2
    second = CliRunner().invoke(app, base + ["--out", str(tmp_path / "2.json"), "--foreground", str(fitted)])
    assert second.exit_code == 0, second.output
    assert json.loads((tmp_path / "1.json").read_text()) == json.loads((tmp_path / "2.json").read_text())
    bad = CliRunner().invoke(app, base + ["--out", str(tmp_path / "3.json"), "--foreground", str(tmp_path / "no")])
    assert bad.exit_code == 2


def test_explain_device_cuda_without_a_gpu_is_a_clear_error_and_cpu_works(red_model_dir, tmp_path):
    import pytest

    from labelfree.explainer.model import _cuda_in_torch, providers

    if "CUDAExecutionProvider" in providers() or _cuda_in_torch():
        pytest.skip("this machine has a GPU: device cuda is valid here")
    images = tmp_path / "imgs"
    images.mkdir()
    Image.fromarray(scene(128, ((40, 40, 40),))).save(images / "one.png")
    base = ["--model", str(red_model_dir), "--images", str(images), "--method", "cam"]
    cuda = CliRunner().invoke(app, base + ["--out", str(tmp_path / "a.json"), "--device", "cuda"])
    assert cuda.exit_code == 2 and "cuda" in cuda.output and not (tmp_path / "a.json").exists()
    bad = CliRunner().invoke(app, base + ["--out", str(tmp_path / "b.json"), "--device", "tpu"])
    assert bad.exit_code == 2 and "device must be" in bad.output
    cpu = CliRunner().invoke(app, base + ["--out", str(tmp_path / "c.json"), "--device", "cpu"])
    assert cpu.exit_code == 0, cpu.output


def test_candidates_are_drawn_thin_and_untagged_under_the_region_boxes():
    from labelfree.explainer.overlay import BOX_COLOUR, CANDIDATE_COLOUR, draw_ranked

    picture = draw_ranked(Image.new("RGB", (240, 240)), np.array([[20, 40, 100, 120], [130, 40, 220, 200]]),
                          np.array([0.9, 0.1]))
    arr = np.asarray(picture)
    assert tuple(arr[80, 20]) == BOX_COLOUR and tuple(arr[100, 130]) == CANDIDATE_COLOUR
    assert tuple(arr[100, 132]) == (0, 0, 0)  # one pixel wide at this size
    assert not (arr[30:40, 130:160] == CANDIDATE_COLOUR).all(axis=-1).any()  # no tag above the candidate


def test_explain_options_turn_self_training_fine_level_and_candidates_off(red_model_dir, tmp_path):
    images = tmp_path / "imgs"
    images.mkdir()
    Image.fromarray(scene(128, ((40, 40, 40),))).save(images / "one.png")
    base = ["--model", str(red_model_dir), "--images", str(images)]
    plain = CliRunner().invoke(app, base + ["--out", str(tmp_path / "p.json"), "--fg-rounds", "0", "--no-candidates",
                                            "--no-fine", "--save-foreground", str(tmp_path / "fg.json")])
    assert plain.exit_code == 0, plain.output
    fitted = json.loads((tmp_path / "fg.json").read_text())
    assert fitted["rounds"] == 0 and fitted["fine"] is None
    assert len(json.loads((tmp_path / "p.json").read_text())["annotations"]) == 1  # the region box alone
    bad = CliRunner().invoke(app, base + ["--out", str(tmp_path / "b.json"), "--fg-rounds", "-1"])
    assert bad.exit_code == 2 and "fg_rounds" in bad.output
