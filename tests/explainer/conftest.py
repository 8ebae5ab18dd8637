import pytest

from tests.explainer.synthetic import write_red_model


@pytest.fixture(scope="session")
def red_model_dir(tmp_path_factory):
    """A tiny contract-conforming ONNX classifier that fires on red squares."""
    path = tmp_path_factory.mktemp("red_model")
    write_red_model(path)
    return path
