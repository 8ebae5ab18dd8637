"""`labelfree report`: a real small run's rows and objects -> one self-contained HTML file."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import uuid

import pytest
from typer.testing import CliRunner

from labelfree.pipeline.cli import app
from labelfree.pipeline.gather import gather_report
from labelfree.pipeline.report import render_report
from tests.pipeline.report_run import build_run

runner = CliRunner()


@pytest.fixture(scope="module")
def red_run(tmp_path_factory):
    return build_run(tmp_path_factory.mktemp("red_run"))


def test_gather_fills_every_section_of_a_finished_run(red_run, tmp_path):
    report = gather_report(red_run.run_id, work_dir=tmp_path)
    assert report.missing == [] and report.run["state"] == "succeeded"
    assert report.dataset["images"] == 28 and report.dataset["labels"] == {"positive": 16, "negative": 12}
    assert report.dataset["licences"] == {"CC BY 4.0": 10, "CC BY-SA 4.0": 9, "CC0 1.0": 9}
    assert all(a["creator"] and a["landing_url"] for a in report.dataset["attribution"])
    assert len(report.dataset["attribution"]) == 28
    curves = report.classifier["curves"]
    assert curves["roc"]["fpr"][0] == 0 and curves["roc"]["tpr"][-1] == 1 and curves["pr"]["recall"]
    assert report.explainer["method"] == "cam" and report.explainer["boxes"] >= 15
    assert len(report.lime_tiles) == 12 and all(t.credit and "P = " in t.caption for t in report.lime_tiles)
    # the detector's pictures are its own validation split: a quarter of the boxed photos
    assert 1 <= len(report.detector_tiles) <= report.detector["training"]["n_val"]
    assert "held out" in report.detector["tiles_from"] and report.detector["deployed"]
    assert [s["step"] for s in report.run["steps"]] == ["ingest", "train", "explain", "train_detector", "deploy"]
    assert all(s["state"] == "succeeded" and s["seconds"] is not None for s in report.run["steps"])


def test_report_scores_detector_teacher_and_whole_image_against_human_boxes(red_run, tmp_path):
    report = gather_report(red_run.run_id, gt=red_run.gt, gt_images=red_run.gt_images, tiles=4, work_dir=tmp_path)
    ev = report.evaluation
    assert ev["n_images"] == 8 and {"detector", "teacher", "whole image"} <= set(ev)
    # the red-box detector finds the red animals; a whole-image box does not fit them
    assert ev["detector"]["corloc"] >= 0.75 and ev["detector"]["corloc"] > ev["whole image"]["corloc"]
    assert ev["teacher"]["corloc"] > ev["whole image"]["corloc"]
    assert ev["detector"]["seconds_per_image"] > 0 and ev["whole image"]["seconds_per_image"] is None
    assert len(report.detector_tiles) == 4 and report.detector_tiles[0].caption.startswith("cam00.jpg")
    html = render_report(report)
    assert "Against human boxes" in html and "AP@0.5" in html


def test_a_run_from_before_overlays_were_stored_gets_its_evidence_recomputed(red_run, tmp_path):
    from labelfree.core.store import get_store
    from labelfree.pipeline import report_models as rm
    from labelfree.pipeline.gather import explainer_tiles, read_run

    rows, store = read_run(red_run.run_id), get_store()
    rows.jobs["explain"]["result"] = {k: v for k, v in rows.jobs["explain"]["result"].items()
                                      if k not in ("overlays_prefix", "foreground_key")}
    classifier = store.get_dir(rows.classifier["store_prefix"], tmp_path / "classifier")
    tiles = explainer_tiles(rows, store, rm.Teacher(classifier, rows.jobs["explain"]["params"]), 3)
    assert len(tiles) == 3 and all("P = " in t.caption for t in tiles)
    # a foreground teacher cannot be rebuilt without the fit that run did not keep: said, not guessed
    with pytest.raises(ValueError, match="fitted foreground"):
        rm.Teacher(classifier, {**rows.jobs["explain"]["params"], "method": "foreground"})


def test_unreadable_human_boxed_photos_are_left_out_of_the_scores_and_said(red_run, tmp_path):
    import shutil

    folder = tmp_path / "gt"
    shutil.copytree(red_run.gt_images, folder)
    (folder / "cam03.jpg").write_bytes(b"not a jpeg")
    report = gather_report(red_run.run_id, gt=red_run.gt, gt_images=folder, tiles=8, work_dir=tmp_path / "w")
    assert report.evaluation["n_images"] == 7 and report.evaluation["unreadable"] == 1
    assert any("could not be read" in note for note in report.notes)
    assert len(report.detector_tiles) == 7 and not any(t.caption.startswith("cam03") for t in report.detector_tiles)


def test_report_cli_writes_one_self_contained_file(red_run, tmp_path):
    out = tmp_path / "nested" / "report.html"
    result = runner.invoke(app, ["report", red_run.run_id, "--out", str(out), "--tiles", "6"])
    assert result.exit_code == 0, result.output
    html = out.read_text()
    srcs = re.findall(r"<img [^>]*src=\"([^\"]*)\"", html)
    assert len(srcs) == html.count("<img ") >= 7 and all(s.startswith("data:image/") for s in srcs)
    assert not re.search(r"<(script|link|iframe)\b|url\(|@import", html)  # nothing is fetched
    # the only URLs are the attribution links, which the licences ask for
    assert set(re.findall(r"https?://[^\"'<\s]+", html)) <= set(re.findall(r"href=\"(https?://[^\"]+)\"", html))
    assert html.count("<svg class=\"curve\"") == 2
    assert "28 photos" in html and "red deer" in html and "Ranger A" in html
    # how many negatives the first round fired on (the look-alikes the next round drew more often)
    assert "negatives the first round boxed at 0.5 (drawn more often after)</td><td>2.5%" in html
    assert not list(out.parent.glob(".*partial"))


def test_report_of_an_unfinished_run_shows_what_exists_and_names_the_rest(tmp_path):
    built = build_run(tmp_path / "run", query="red fox", n_pos=8, n_neg=6, stop_after="explain")
    out = tmp_path / "report.html"
    result = runner.invoke(app, ["report", built.run_id, "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "train_detector step is running at 25%" in result.output and "deploy step is not started" in result.output
    html = out.read_text()
    assert "Not everything is here yet" in html and "No detector yet." in html
    assert html.count("<svg class=\"curve\"") == 2 and "teacher boxes" in html


def test_report_cli_rejects_unknown_run_and_half_given_ground_truth_in_one_line(tmp_path):
    env = {**os.environ, "COLUMNS": "60"}
    missing = str(uuid.uuid4())
    for args, reason in (([missing], f"error: run {missing} does not exist"),
                         (["not-a-run-id"], "error: run not-a-run-id does not exist"),
                         ([missing, "--gt", str(tmp_path / "gt.json")], "error: --gt and --gt-images go together")):
        done = subprocess.run([sys.executable, "-m", "labelfree.cli", "report", *args, "--out",
                               str(tmp_path / "r.html")], capture_output=True, text=True, env=env, timeout=120)
        assert done.returncode == 2, done.stderr
        assert done.stderr.startswith(reason) and done.stderr.count("\n") == 1, done.stderr
    assert not (tmp_path / "r.html").exists()


def test_the_detector_pictures_come_from_the_split_its_manifest_recorded():
    from labelfree.pipeline.gather import detector_holdout

    coco = {"images": [{"id": 1, "file_name": "a.jpg"}], "annotations": [{"image_id": 1, "bbox": [0, 0, 5, 5]}]}
    assert detector_holdout(coco, {"training": {"val_positives": ["b.jpg", "c.jpg"]}}) == ["b.jpg", "c.jpg"]
