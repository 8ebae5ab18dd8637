"""Both backends on the same model: identical detections; Triton readiness and version pinning."""

import numpy as np
import pytest
from PIL import Image

from labelfree.core.errors import LabelfreeError
from labelfree.core.images import load_rgb
from labelfree.inference.backends import Detector, DetectorSpec, OnnxRuntimeBackend, TritonBackend
from tests.inference.tiny_detector import square_image

pytestmark = pytest.mark.service


def _photos(shared_dir, n: int = 6) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    photos = [square_image(), rng.integers(0, 256, (120, 200, 3), dtype=np.uint8)]
    images = sorted((shared_dir / "lion" / "dev" / "images").glob("*.jpg"))[:n] if shared_dir else []
    return photos + [load_rgb(p) for p in images]


@pytest.fixture(scope="module")
def photos(request):
    from tests.conftest import SHARED_DATA

    return _photos(SHARED_DATA if SHARED_DATA.is_dir() else None)


def test_bright_square_is_found_inside_the_square(tiny_dir):
    detector = Detector(OnnxRuntimeBackend(tiny_dir), DetectorSpec.from_dir(tiny_dir))
    dets = detector.detect([Image.fromarray(square_image(128, (32, 32, 96, 96)))], threshold=0.5)[0]
    assert dets and all(d["conf"] > 0.99 for d in dets)
    for d in dets:
        x, y, w, h = d["bbox"]
        assert x >= 0.25 - 1e-6 and y >= 0.25 - 1e-6 and x + w <= 0.75 + 1e-6 and y + h <= 0.75 + 1e-6


def test_triton_and_onnxruntime_give_identical_detections(det_dir, triton_server, photos):
    spec = DetectorSpec.from_dir(det_dir)
    ort_det = Detector(OnnxRuntimeBackend(det_dir), spec)
    triton = TritonBackend(triton_server.url, "labelfree_detector", "1")
    try:
        triton.check_ready()
        tri_det = Detector(triton, spec)
        assert triton.input_size() == spec.input_size
        for batch in (photos[:1], photos):  # batch of one and a batch of many
            a = ort_det.detect(batch, threshold=0.0)
            b = tri_det.detect(batch, threshold=0.0)
            assert a == b
        assert len(a[0]) > 0  # threshold 0 keeps all K slots of an untrained model too
        blank = np.zeros((1, spec.input_size, spec.input_size, 3), np.uint8)
        for x, y in zip(ort_det.backend.infer(blank), triton.infer(blank)):
            assert x.dtype == y.dtype and x.shape == y.shape and np.array_equal(x, y)
    finally:
        triton.close()


def test_triton_splits_batches_above_the_model_max_batch(det_dir, triton_server):
    triton = TritonBackend(triton_server.url, "labelfree_detector")
    try:
        size = DetectorSpec.from_dir(det_dir).input_size
        images = np.random.default_rng(1).integers(0, 256, (triton.max_batch() + 3, size, size, 3), dtype=np.uint8)
        raw = triton.infer(images)
        ref = OnnxRuntimeBackend(det_dir).infer(images)
        assert raw.scores.shape == ref.scores.shape and np.array_equal(raw.classes, ref.classes)
        np.testing.assert_allclose(raw.scores, ref.scores, rtol=1e-6)
    finally:
        triton.close()


def test_a_pinned_version_the_server_lacks_is_unavailable(triton_server):
    triton = TritonBackend(triton_server.url, "labelfree_detector", "7")
    try:
        with pytest.raises(LabelfreeError) as info:
            triton.check_ready()
        assert info.value.code == "unavailable" and "version 7" in info.value.detail
        assert info.value.retry_after
    finally:
        triton.close()


def test_onnxruntime_rejects_a_model_without_the_detector_signature(tmp_path):
    with pytest.raises(LabelfreeError, match="does not exist"):
        OnnxRuntimeBackend(tmp_path / "missing")
