"""``POST /v1/projects`` with provider dir: folders become the dir provider's queries."""

import pytest

from labelfree.core.errors import LabelfreeError
from labelfree.pipeline.api import _dir_provider_params


def test_negative_folders_are_named_by_their_path_under_the_common_root(tmp_path):
    for folder in ("lion/pool", "negatives/scenes", "bigcats/tiger"):
        (tmp_path / folder).mkdir(parents=True)
    params = _dir_provider_params("lion", [str(tmp_path / "lion/pool")],
                                  [str(tmp_path / "negatives/scenes"), str(tmp_path / "bigcats/tiger"),
                                   str(tmp_path / "bigcats/tiger")], page_size=100)
    assert params["hard_negatives"] == ["negatives/scenes", "bigcats/tiger", "bigcats/tiger (3)"]
    assert params["provider_options"] == {"root": str(tmp_path), "aliases": {
        "lion": "lion/pool", "negatives/scenes": "negatives/scenes", "bigcats/tiger": "bigcats/tiger",
        "bigcats/tiger (3)": "bigcats/tiger"}}


def test_a_missing_folder_is_named(tmp_path):
    (tmp_path / "pos").mkdir()
    with pytest.raises(LabelfreeError, match="not folders: .*nowhere"):
        _dir_provider_params("lion", [str(tmp_path / "pos")], [str(tmp_path / "nowhere")], page_size=100)
