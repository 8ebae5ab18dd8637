import os

import pytest

from labelfree.core.errors import LabelfreeError
from labelfree.core.store import LocalStore, content_key


def test_put_bytes_is_content_addressed_and_idempotent(tmp_path):
    store = LocalStore(tmp_path)
    key = store.put_bytes(b"hello", ".JPG")
    assert key == content_key(b"hello", ".jpg") and key.startswith("images/sha256/")
    assert store.put_bytes(b"hello", ".jpg") == key
    assert store.get(key) == b"hello"


@pytest.mark.parametrize("key", ["../escape", "/abs/path", "a/../../b", ""])
def test_keys_cannot_escape_the_root(tmp_path, key):
    with pytest.raises(LabelfreeError):
        LocalStore(tmp_path).put(key, b"x")


def test_crash_during_write_leaves_no_visible_or_partial_object(tmp_path, monkeypatch):
    store = LocalStore(tmp_path)
    store.put("models/m/model.onnx", b"old")

    def crash(*_a, **_k):
        raise OSError("disk died")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError):
        store.put("models/m/model.onnx", b"new-but-never-finished")
    with pytest.raises(OSError):
        store.put("models/m/other.onnx", b"x")
    monkeypatch.undo()
    assert store.get("models/m/model.onnx") == b"old"
    assert not store.exists("models/m/other.onnx")
    assert [p.name for p in (tmp_path / "models/m").iterdir()] == ["model.onnx"]


def test_dir_round_trip_and_listing(tmp_path):
    src = tmp_path / "src"
    (src / "1").mkdir(parents=True)
    (src / "manifest.json").write_text("{}")
    (src / "1" / "model.onnx").write_bytes(b"onnx")
    store = LocalStore(tmp_path / "store")
    store.put_dir("models/abc", src)
    assert sorted(store.list("models/abc")) == ["models/abc/1/model.onnx", "models/abc/manifest.json"]
    out = store.get_dir("models/abc", tmp_path / "out")
    assert (out / "1" / "model.onnx").read_bytes() == b"onnx"


def test_missing_object_is_not_found(tmp_path):
    with pytest.raises(LabelfreeError) as err:
        LocalStore(tmp_path).get("images/nope.jpg")
    assert err.value.status == 404
