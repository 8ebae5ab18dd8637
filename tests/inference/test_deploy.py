"""Deploying a registered detector: one deployed row, and a new Triton version folder."""

from labelfree.core.db import session_scope
from labelfree.core.models import Model
from labelfree.core.store import get_store
from labelfree.inference.deploy import deploy_detector, write_triton_version


def _det_dir(tmp_path):
    det = tmp_path / "det"
    (det / "triton" / "labelfree_detector" / "1").mkdir(parents=True)
    (det / "model.onnx").write_bytes(b"onnx-bytes")
    (det / "manifest.json").write_text("{}")
    (det / "triton" / "labelfree_detector" / "config.pbtxt").write_text('name: "labelfree_detector"\nmax_batch_size: 8\n')
    return det


def test_each_deploy_writes_the_next_triton_version_atomically(tmp_path):
    det, repo = _det_dir(tmp_path), tmp_path / "repo"
    assert write_triton_version(det, repo, "lions") == 1
    assert write_triton_version(det, repo, "lions") == 2
    assert (repo / "lions" / "2" / "model.onnx").read_bytes() == b"onnx-bytes"
    assert (repo / "lions" / "config.pbtxt").read_text().startswith('name: "lions"')
    assert not [p for p in (repo / "lions").iterdir() if p.name.startswith(".")]


def test_deploy_marks_only_the_new_detector_deployed(tmp_path):
    store = get_store()
    ids = []
    for i in range(2):
        det = _det_dir(tmp_path / str(i))
        prefix = f"models/test-deploy-{i}-{tmp_path.name}"
        store.put_dir(prefix, det)
        with session_scope() as s:
            row = Model(kind="detector", name=f"d{i}", store_prefix=prefix)
            s.add(row)
            s.flush()
            ids.append(row.id)
    for model_id in ids:
        result = deploy_detector(model_id, triton_repository=tmp_path / "repo", triton_model="labelfree_detector",
                                 work_dir=tmp_path / "work")
    assert result["triton_version"] == 2
    with session_scope() as s:
        assert s.get(Model, ids[1]).deployed and not s.get(Model, ids[0]).deployed
