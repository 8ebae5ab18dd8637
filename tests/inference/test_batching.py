"""In-process detection batches the images of concurrent requests: REST on the event loop
(runtime.RequestBatcher), gRPC and other threads (runtime.ThreadBatcher)."""

import asyncio
import io
import threading
import time

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


def _gate_first_call(runtime, monkeypatch, waiting: int) -> list[int]:
    """Record every backend call's image count; the first call holds until ``waiting`` more threads queue."""
    backend, batcher = runtime.get_detector().backend, runtime.thread_batcher()
    infer, sizes = backend.infer, []

    def gated(images):
        sizes.append(len(images))
        if len(sizes) == 1:
            deadline = time.monotonic() + 10
            while len(batcher._pending) < waiting and time.monotonic() < deadline:
                time.sleep(0.005)
        return infer(images)

    monkeypatch.setattr(backend, "infer", gated)
    return sizes


def _detect_in_threads(call, args: list, sizes: list[int]) -> list:
    """``call(*a)`` for each ``a`` in its own thread; the others start once the first is in the backend
    (``sizes``, from ``_gate_first_call``, has its call)."""
    out: list = [None] * len(args)

    def run(i):
        try:
            out[i] = call(*args[i])
        except Exception as exc:  # noqa: BLE001 - the test looks at it
            out[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(args))]
    threads[0].start()
    deadline = time.monotonic() + 10
    while not sizes and time.monotonic() < deadline:  # the first call leads and holds in the backend
        time.sleep(0.005)
    for t in threads[1:]:
        t.start()
    for t in threads:
        t.join(20)
    return out


def test_concurrent_threads_share_backend_calls_and_keep_their_own_answers(runtime, monkeypatch):
    alone = [runtime.detect_one(data, file=f"p{i}.jpg", threshold=t)["image"]
             for i, (data, t) in enumerate(zip(PHOTOS, THRESHOLDS))]
    sizes = _gate_first_call(runtime, monkeypatch, waiting=4)

    results = _detect_in_threads(lambda d, f, t: runtime.detect_one(d, file=f, threshold=t, entry="grpc"),
                                 [(d, f"p{i}.jpg", t) for i, (d, t) in enumerate(zip(PHOTOS, THRESHOLDS))], sizes)

    assert sizes == [1, 3, 1]  # the first alone; the four that queued behind it in batches of inference_batch
    assert [r["image"] for r in results] == alone


def test_a_failed_threaded_call_fails_only_its_batch(runtime, monkeypatch):
    sizes = _gate_first_call(runtime, monkeypatch, waiting=4)
    gated = runtime.get_detector().backend.infer

    def second_fails(images):
        out = gated(images)
        if len(sizes) == 2:
            raise LabelfreeError("unavailable", "model went away", retry_after=5)
        return out

    monkeypatch.setattr(runtime.get_detector().backend, "infer", second_fails)

    results = _detect_in_threads(lambda d: runtime.detect_one(d, entry="grpc"), [(d,) for d in PHOTOS], sizes)

    assert sizes == [1, 3, 1]
    failed = [r for r in results if isinstance(r, LabelfreeError)]
    assert len(failed) == 3 and all(r.code == "unavailable" for r in failed)
    assert isinstance(results[0], dict) and sum(isinstance(r, dict) for r in results) == 2


def test_threads_are_not_batched_with_triton_or_at_batch_1(configure, tiny_dir):
    from labelfree.inference import runtime

    configure(inference_backend="onnxruntime", detector_dir=tiny_dir, inference_batch=1)
    assert runtime.thread_batcher() is None
    configure(inference_backend="triton", detector_dir=tiny_dir, inference_batch=8)
    assert runtime.thread_batcher() is None
    configure(inference_backend="onnxruntime", detector_dir=tiny_dir, inference_batch=8)
    assert runtime.thread_batcher().max_batch == 8


def test_concurrent_grpc_calls_each_get_their_own_photo_back(runtime, monkeypatch):
    import grpc

    from labelfree.inference import detect_pb2, detect_pb2_grpc
    from labelfree.inference.grpc_server import start_grpc_server

    alone = [runtime.detect_one(data, file=f"p{i}.jpg")["image"] for i, data in enumerate(PHOTOS)]
    sizes = _gate_first_call(runtime, monkeypatch, waiting=4)
    server = start_grpc_server(0, max_bytes=1_000_000)
    channel = grpc.insecure_channel(f"127.0.0.1:{server.port}")
    try:
        stub = detect_pb2_grpc.DetectServiceStub(channel)
        replies = _detect_in_threads(lambda d, f: stub.Detect(detect_pb2.DetectRequest(image=d, file=f), timeout=20),
                                     [(d, f"p{i}.jpg") for i, d in enumerate(PHOTOS)], sizes)
    finally:
        channel.close()
        server.stop(grace=None)

    assert sizes == [1, 3, 1]
    for reply, image in zip(replies, alone):
        assert reply.file == image["file"] and not reply.failure
        assert [d.category for d in reply.detections] == [d["category"] for d in image["detections"]]
        assert [v for d in reply.detections for v in (d.conf, *d.bbox)] == \
            pytest.approx([v for d in image["detections"] for v in (d["conf"], *d["bbox"])])  # float32 fields


def test_a_grpc_stream_batches_the_requests_that_arrive_while_one_runs(runtime, monkeypatch):
    import grpc

    from labelfree.inference import detect_pb2, detect_pb2_grpc
    from labelfree.inference.grpc_server import start_grpc_server

    # gRPC's threshold 0 means "the model's default", as unset
    alone = [runtime.detect_one(data, file=f"p{i}.jpg", threshold=t or None)["image"]
             for i, (data, t) in enumerate(zip(PHOTOS, THRESHOLDS))]
    backend = runtime.get_detector().backend
    infer, sizes = backend.infer, []
    first_running, all_sent = threading.Event(), threading.Event()

    def held(images):  # the first call holds while the client sends the rest of the stream
        sizes.append(len(images))
        if len(sizes) == 1:
            first_running.set()
            assert all_sent.wait(10)
            time.sleep(0.5)  # the last requests cross the wire into the reader's queue
        return infer(images)

    def send(requests):  # the first request alone, the rest once the model runs on it
        yield requests[0]
        assert first_running.wait(10)
        yield from requests[1:]
        all_sent.set()

    monkeypatch.setattr(backend, "infer", held)
    requests = [detect_pb2.DetectRequest(image=d, file=f"p{i}.jpg", threshold=t or 0.0)
                for i, (d, t) in enumerate(zip(PHOTOS, THRESHOLDS))]
    requests.insert(2, detect_pb2.DetectRequest(image=b"junk", file="bad.jpg"))
    requests.insert(4, detect_pb2.DetectRequest(image=b"", file="empty.jpg"))
    server = start_grpc_server(0, max_bytes=1_000_000)
    channel = grpc.insecure_channel(f"127.0.0.1:{server.port}")
    try:
        replies = list(detect_pb2_grpc.DetectServiceStub(channel).DetectStream(send(requests), timeout=20))
    finally:
        channel.close()
        server.stop(grace=None)

    assert sizes == [1, 2, 2]  # inference_batch 3: then [p1, bad, p2] and [empty, p3, p4], one call each
    assert [r.file for r in replies] == [r.file for r in requests]
    assert "not a decodable image" in replies[2].failure and "empty" in replies[4].failure
    good = [r for r in replies if not r.failure]
    for reply, image in zip(good, alone):
        assert [v for d in reply.detections for v in (d.conf, *d.bbox)] == \
            pytest.approx([v for d in image["detections"] for v in (d["conf"], *d["bbox"])])
