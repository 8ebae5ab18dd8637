import json
import shutil

from typer.testing import CliRunner

from labelfree.core.megadetector import validate_batch
from labelfree.trainer.detector.cli import app
from labelfree.trainer.detector.infer import detect_folder


def test_detect_folder_writes_valid_megadetector_with_failures(trained, synthetic, tmp_path):
    images = tmp_path / "images"
    shutil.copytree(synthetic["images"], images)
    (images / "sub" / "broken.jpg").write_bytes(b"not a jpeg")
    doc = detect_folder(trained["dir"], images, threshold=0.3, batch_size=3)
    validate_batch(doc)
    by_file = {im["file"]: im for im in doc["images"]}
    assert by_file["sub/broken.jpg"]["detections"] is None and by_file["sub/broken.jpg"]["failure"]
    assert set(synthetic["truths"]) <= set(by_file)
    assert doc["detection_categories"] == {"1": "blob"}
    found = [im for name, im in by_file.items() if len(synthetic["truths"].get(name, [])) > 0]
    assert all(im["detections"] for im in found)


def test_cli_detect_and_bad_input(trained, synthetic, tmp_path):
    runner = CliRunner()
    out = tmp_path / "detections.json"
    result = runner.invoke(app, ["detect", "--model", str(trained["dir"]), "--images", str(synthetic["images"]),
                                 "--out", str(out), "--csv", str(tmp_path / "d.csv")])
    assert result.exit_code == 0, result.output
    validate_batch(json.loads(out.read_text()))
    assert (tmp_path / "d.csv").read_text().startswith("file,failure,category")
    bad = runner.invoke(app, ["detect", "--model", str(tmp_path), "--images", str(synthetic["images"]),
                              "--out", str(out)])
    assert bad.exit_code == 2 and "not a detector directory" in bad.output
    bad = runner.invoke(app, ["train-detector", "--images", str(synthetic["images"]), "--boxes",
                              str(tmp_path / "missing.json"), "--out", str(tmp_path / "d")])
    assert bad.exit_code == 2 and "missing.json" in bad.output
    bad = runner.invoke(app, ["train-detector", "--images", str(synthetic["images"]), "--boxes",
                              str(synthetic["boxes"]), "--out", str(tmp_path / "d"), "--ema", "1"])
    assert bad.exit_code == 2 and "--ema" in bad.output
    bad = runner.invoke(app, ["train-detector", "--images", str(synthetic["images"]), "--boxes",
                              str(synthetic["boxes"]), "--out", str(tmp_path / "d"), "--keep", "middle"])
    assert bad.exit_code == 2 and "--keep" in bad.output and not (tmp_path / "d").exists()
    bad = runner.invoke(app, ["train-detector", "--images", str(synthetic["images"]), "--boxes",
                              str(synthetic["boxes"]), "--out", str(tmp_path / "d"), "--hard-negatives", "-1"])
    assert bad.exit_code == 2 and "--hard-negatives" in bad.output and not (tmp_path / "d").exists()
    bad = runner.invoke(app, ["train-detector", "--images", str(synthetic["images"]), "--boxes",
                              str(synthetic["boxes"]), "--out", str(tmp_path / "d"), "--neg-fraction", "1"])
    assert bad.exit_code == 2 and "--neg-fraction" in bad.output and not (tmp_path / "d").exists()
