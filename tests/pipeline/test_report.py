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
