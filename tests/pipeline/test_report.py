from labelfree.pipeline.api import ProjectRequest
from labelfree.pipeline.report import Report, Tile, render_report, thumbnail

import numpy as np
import pytest
from pydantic import ValidationError


def test_report_embeds_images_curves_and_timings():
    tile = Tile(thumbnail(np.full((40, 60, 3), 200, np.uint8)), "lion 001")
    html = render_report(Report(
        title="lion", run={"id": "r1", "state": "succeeded",
                           "steps": [{"step": "ingest", "state": "succeeded", "progress": 1.0, "seconds": 3.2}]},
        dataset={"labels": {"positive": 10}, "licences": {"by": 10}},
        classifier={"roc_auc": 0.99, "curves": {"roc": {"fpr": [0, 0.1, 1], "tpr": [0, 0.9, 1]}}},
        lime_tiles=[tile], detector_tiles=[tile],
        evaluation={"detector": {"corloc": 0.74, "ap50": 0.49}, "teacher": {"corloc": 0.72}}))
    assert html.count("data:image/jpeg;base64,") == 2
    assert "<svg" in html and "ROC" in html and "ingest" in html and "0.740" in html
    assert "http://" not in html and "https://" not in html  # self-contained


def test_dir_provider_project_needs_both_folders():
    with pytest.raises(ValidationError, match="pos_dirs"):
        ProjectRequest(query="lion", provider="dir", pos_dirs=["/tmp"])


def test_report_escapes_provider_metadata_and_links_only_web_sources():
    hostile = '<script>alert(1)</script>'
    html = render_report(Report(
        title="lion", run={"id": "r1", "state": "running", "query": hostile, "steps": []},
        dataset={"images": 1, "labels": {"positive": 1}, "licences": {hostile: 1},
                 "attribution": [{"file": hostile, "label": "positive", "creator": hostile, "licence": "CC BY 4.0",
                                  "licence_url": "javascript:alert(1)", "landing_url": 'https://x.org/"><b>'}]},
        missing=["detector: the train_detector step is running at 40%"]))
    assert "<script>" not in html and "javascript:" not in html and '"><b>' not in html
    assert 'href="https://x.org/&quot;&gt;&lt;b&gt;"' in html
    assert "Not everything is here yet" in html and "running at 40%" in html


def test_summary_reads_as_sentences_with_the_headline_numbers():
    from labelfree.pipeline.report import plain_summary

    text = plain_summary(Report(
        title="lion", run={"id": "r1", "state": "succeeded", "query": "lion"},
        dataset={"images": 412, "provider": "openverse", "labels": {"positive": 212, "negative": 200},
                 "licences": {"CC BY 2.0": 300, "CC0 1.0": 112}},
        classifier={"roc_auc": 0.9991, "n_validation": 80},
        explainer={"method": "cam", "boxes": 260, "boxed_images": 198},
        detector={"validation": {"ap50": 0.61}, "deployed": True}))
    assert "<b>412 photos</b>" in text and "from Openverse" in text and "2 licences" in text
    assert "ROC-AUC <b>0.999</b>" in text and "<b>260 boxes</b> on 198 photos" in text
    assert "AP@0.5 0.61" in text and "--gt" in text and "deployed" in text
