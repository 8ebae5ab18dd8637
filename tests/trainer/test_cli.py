"""trainer.cli: the train-classifier / classify contract on folders, including error exits."""

from __future__ import annotations

import csv
import json

import pytest
from typer.testing import CliRunner

from labelfree.trainer.cli import app

runner = CliRunner()


@pytest.fixture(scope="module")
def model_dir(image_folders, featurizer, tmp_path_factory):
    out = tmp_path_factory.mktemp("model")
    result = runner.invoke(app, ["train-classifier", "--pos", str(image_folders["pos"]),
                                 "--neg", str(image_folders["neg"]), "--out", str(out), "--val-fraction", "0.25"])
    assert result.exit_code == 0, result.output
    return out


def test_train_classifier_writes_the_model_dir_contract(model_dir):
    assert {p.name for p in model_dir.iterdir()} >= {"model.onnx", "manifest.json", "metrics.json"}
    manifest = json.loads((model_dir / "manifest.json").read_text())
    assert manifest["input_size"] == 224 and manifest["inputs"][0]["dtype"] == "uint8"
    assert [o["name"] for o in manifest["outputs"]] == ["score", "logit", "cam"]
    assert manifest["backbone_version"].startswith("efficientnet-lite0@")
    assert "(float(x) - 127) / 128" in manifest["preprocessing"]["inside_graph"]
    metrics = json.loads((model_dir / "metrics.json").read_text())
    assert metrics["counts"]["positive"] == 14 and metrics["counts"]["negative"] == 14  # sub-folder read
    assert metrics["validation"]["roc_auc"] >= 0.99
    assert metrics["onnx_check_max_abs_diff"] <= 1e-4
    assert {"pr_auc", "accuracy", "calibration"} <= set(metrics["validation"])
    roc, pr = metrics["validation"]["curves"]["roc"], metrics["validation"]["curves"]["pr"]
    assert len(roc["fpr"]) == len(roc["tpr"]) >= 2 and len(pr["recall"]) == len(pr["precision"]) >= 2


def test_retrain_reuses_cached_features(model_dir, image_folders, tmp_path):
    result = runner.invoke(app, ["train-classifier", "--pos", str(image_folders["pos"]),
                                 "--neg", str(image_folders["neg"]), "--out", str(tmp_path / "again")])
    assert result.exit_code == 0, result.output
    cache = json.loads((tmp_path / "again" / "metrics.json").read_text())["feature_cache"]
    assert cache == {"hits": 28, "computed": 0}


def test_classify_writes_file_score_csv(model_dir, image_folders, tmp_path):
    images = image_folders["pos"].parent  # pos/, neg/, few/ and 12 corrupt files in broken/
    out = tmp_path / "scores.csv"
    result = runner.invoke(app, ["classify", "--model", str(model_dir), "--images", str(images), "--out", str(out)])
    assert result.exit_code == 0, result.output
    with open(out) as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0]) == ["file", "score"]
    scores = {r["file"]: float(r["score"]) for r in rows}
    assert "broken/broken_00.jpg" not in scores and len(scores) == 14 + 14 + 5
    assert "12 unreadable skipped" in result.output
    pos = [s for f, s in scores.items() if f.startswith(("pos/", "few/"))]
    neg = [s for f, s in scores.items() if f.startswith("neg/")]
    assert min(pos) > max(neg)


@pytest.mark.parametrize("args,reason", [
    (["--pos", "{missing}", "--neg", "{neg}"], "is not a directory"),
    (["--pos", "{few}", "--neg", "{neg}"], "positive class has 5 image files; at least 10"),
    (["--pos", "{pos}", "--neg", "{empty}"], "negative class is empty: no image files"),
    (["--pos", "{pos}", "--neg", "{broken}"], "negative class is empty: no readable images"),
])
def test_train_classifier_bad_input_exits_2_with_one_line(args, reason, image_folders, tmp_path):
    folders = {**{k: str(v) for k, v in image_folders.items()}, "missing": str(tmp_path / "nope")}
    argv = ["train-classifier", *[a.format(**folders) for a in args], "--out", str(tmp_path / "m")]
    result = runner.invoke(app, argv)
    assert result.exit_code == 2
    assert reason in result.output and len(result.output.strip().splitlines()) == 1, result.output


def test_classify_rejects_a_folder_that_is_not_a_model(image_folders, tmp_path):
    result = runner.invoke(app, ["classify", "--model", str(tmp_path), "--images", str(image_folders["pos"]),
                                 "--out", str(tmp_path / "s.csv")])
    assert result.exit_code == 2 and "model.onnx is missing" in result.output


def test_augment_adds_flip_and_crop_rows_for_training_only(model_dir, image_folders, tmp_path):
    result = runner.invoke(app, ["train-classifier", "--pos", str(image_folders["pos"]),
                                 "--neg", str(image_folders["neg"]), "--out", str(tmp_path / "aug"), "--augment"])
    assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / "aug" / "metrics.json").read_text())
    assert metrics["counts"]["augmented_rows"] == 2 * 28
    assert metrics["validation"]["n"] == metrics["counts"]["validation"]  # views are never scored
    assert metrics["feature_cache"]["hits"] >= 28  # the full views come from the cache
