"""In-process REST detection batches the images of concurrent requests (runtime.RequestBatcher)."""

import asyncio
import io

import pytest
from PIL import Image

from labelfree.core.errors import LabelfreeError
from tests.inference.tiny_detector import square_image


def _jpeg(box) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(square_image(128, box)).save(buf, format="JPEG", quality=95)
    return buf.getvalue()


# Five photos with their squares in different places, and a threshold per request.
PHOTOS = [_jpeg((8 + 12 * i, 16, 48 + 12 * i, 72)) for i in range(5)]
THRESHOLDS = [None, 0.0, 0.5, None, 0.99]


@pytest.fixture
def runtime(configure, tiny_dir):
    configure(inference_backend="onnxruntime", detector_dir=tiny_dir, inference_batch=3)
    from labelfree.inference import runtime

    return runtime


def _record_batches(runtime, monkeypatch) -> list[int]:
    """The image count of every backend call from now on (the real backend still runs)."""
    backend = runtime.get_detector().backend
    sizes: list[int] = []
    infer = backend.infer

    def counted(images):
        sizes.append(len(images))
        return infer(images)

    monkeypatch.setattr(backend, "infer", counted)
    return sizes


async def _detect_all(runtime, photos, thresholds) -> list[dict]:
    return await asyncio.gather(*(runtime.detect_one_async(data, file=f"p{i}.jpg", threshold=t)
                                  for i, (data, t) in enumerate(zip(photos, thresholds))))


def test_concurrent_requests_share_backend_calls_and_keep_their_own_answers(runtime, monkeypatch):
    alone = [runtime.detect_one(data, file=f"p{i}.jpg", threshold=t)["image"]
             for i, (data, t) in enumerate(zip(PHOTOS, THRESHOLDS))]
    sizes = _record_batches(runtime, monkeypatch)

    together = asyncio.run(_detect_all(runtime, PHOTOS, THRESHOLDS))

    assert sizes == [3, 2]  # at most inference_batch a call; requests already waiting join
    assert [r["image"] for r in together] == alone
    assert len({len(r["image"]["detections"]) for r in together}) > 1  # the thresholds did differ
    assert all(r["timing_ms"]["inference"] > 0 for r in together)


def test_a_lone_request_runs_at_once_in_a_batch_of_one(runtime, monkeypatch):
    sizes = _record_batches(runtime, monkeypatch)

    result = asyncio.run(runtime.detect_one_async(PHOTOS[0], file="a.jpg"))

    assert sizes == [1] and result["image"]["file"] == "a.jpg" and result["image"]["detections"]


def test_a_failed_call_fails_each_request_of_its_batch_and_the_next_batch_runs(runtime, monkeypatch):
    backend = runtime.get_detector().backend
    infer, calls = backend.infer, []

    def fails_once(images):
        calls.append(len(images))
        if len(calls) == 1:
            raise LabelfreeError("unavailable", "model went away", retry_after=5)
        return infer(images)

    monkeypatch.setattr(backend, "infer", fails_once)

    async def run():
        return await asyncio.gather(*(runtime.detect_one_async(d) for d in PHOTOS), return_exceptions=True)

    results = asyncio.run(run())

    assert calls == [3, 2]
    assert all(isinstance(r, LabelfreeError) and r.code == "unavailable" for r in results[:3])
    assert all(isinstance(r, dict) and r["image"]["detections"] for r in results[3:])


def test_a_request_that_goes_away_does_not_disturb_its_batch(runtime):
    async def run():
        tasks = [asyncio.create_task(runtime.detect_one_async(d, file=f"p{i}.jpg")) for i, d in enumerate(PHOTOS[:3])]
        await asyncio.sleep(0)  # all three are queued
        tasks[1].cancel()
        return await asyncio.gather(*tasks, return_exceptions=True)

    first, gone, third = asyncio.run(run())

    assert isinstance(gone, asyncio.CancelledError)
    assert first["image"]["file"] == "p0.jpg" and third["image"]["file"] == "p2.jpg"


def test_bad_images_are_refused_before_they_reach_a_batch(runtime, monkeypatch):
    sizes = _record_batches(runtime, monkeypatch)

    async def run():
        return await asyncio.gather(runtime.detect_one_async(b"not a jpeg"), runtime.detect_one_async(PHOTOS[0]),
                                    return_exceptions=True)

    bad, good = asyncio.run(run())

    assert isinstance(bad, LabelfreeError) and bad.status == 422
    assert good["image"]["detections"] and sizes == [1]


def test_inference_batch_1_detects_each_request_alone(configure, tiny_dir):
    configure(inference_backend="onnxruntime", detector_dir=tiny_dir, inference_batch=1)
    from labelfree.inference import runtime

    async def run():
        assert runtime.request_batcher() is None
        return await _detect_all(runtime, PHOTOS, THRESHOLDS)

    results = asyncio.run(run())

    assert [r["image"] for r in results] == [runtime.detect_one(d, file=f"p{i}.jpg", threshold=t)["image"]
                                            for i, (d, t) in enumerate(zip(PHOTOS, THRESHOLDS))]


def test_concurrent_http_requests_each_get_their_own_photo_back(runtime, monkeypatch):
    import httpx

    from labelfree.inference.api import app

    alone = [runtime.detect_one(data, file=f"p{i}.jpg")["image"] for i, data in enumerate(PHOTOS)]
    sizes = _record_batches(runtime, monkeypatch)

    async def run():
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://api") as client:
            return await asyncio.gather(*(client.post(f"/v1/detect?file=p{i}.jpg", content=data,
                                                      headers={"content-type": "image/jpeg"})
                                          for i, data in enumerate(PHOTOS)))

    responses = asyncio.run(run())

    assert [r.status_code for r in responses] == [200] * 5
    assert [r.json()["image"] for r in responses] == alone
    assert sum(sizes) == 5 and max(sizes) <= 3
