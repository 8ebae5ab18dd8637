"""The explain job's parameter validation and the API's request checks (no database needed)."""

import pytest
from fastapi.testclient import TestClient

from labelfree.core.errors import LabelfreeError
from labelfree.explainer.tasks import EXPLAIN_TASK, explain_job, explain_params


def test_explain_task_is_on_the_explain_queue():
    assert explain_job.name == EXPLAIN_TASK and explain_job.queue_name == "explain"


def test_explain_params_build_a_config_and_name_bad_values():
    assert explain_params({"model_id": "m", "dataset_id": "d", "samples": 64}).n_samples == 64
    assert explain_params({"model_id": "m", "dataset_id": "d"}).method == "foreground"
    assert explain_params({"model_id": "m", "dataset_id": "d", "method": "cam"}).method == "cam"
    with pytest.raises(LabelfreeError, match="dataset_id"):
        explain_params({"model_id": "m"})
    with pytest.raises(LabelfreeError, match="method"):
        explain_params({"model_id": "m", "dataset_id": "d", "method": "gradcam"})


def test_api_rejects_a_malformed_request_before_touching_the_database():
    from labelfree.explainer.api import app

    response = TestClient(app).post("/v1/explanations", json={"model_id": "not-a-uuid"})
    assert response.status_code == 422
