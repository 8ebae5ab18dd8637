"""The process-wide detector (built once from Settings) and single-image detection with timing.

REST, gRPC and the survey task all call ``detect_one``/``get_detector`` here, so every
entry point shares one backend: one ONNX Runtime session, or one Triton connection.
If the detector cannot be built (Triton down at start), the next call tries again, so the
service recovers when Triton returns without a restart.
"""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
import time
from typing import NamedTuple

from prometheus_client import Gauge, Histogram

import labelfree.core.metrics  # noqa: F401  (a multi-process metrics dir exists before any value)
from labelfree.core.errors import LabelfreeError
from labelfree.core.images import ImageDecodeError, decode_image, detector_preview_side
from labelfree.core.megadetector import image_entry
from labelfree.core.settings import get_settings
from labelfree.inference.backends import Detector, make_backend, make_detector

STAGE_SECONDS = Histogram(
    "labelfree_inference_stage_seconds", "Time per detection stage", ["backend", "stage"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
IN_FLIGHT = Gauge("labelfree_inference_in_flight", "Images being detected now", ["backend", "entry"],
                  multiprocess_mode="livesum")
IMAGES = Histogram("labelfree_inference_batch_images", "Images per backend call", ["backend"],
                   buckets=(1, 2, 4, 8, 16, 32, 64))

_lock = threading.Lock()
_detector: Detector | None = None
_detector_key: str | None = None
_checked_at = 0.0
# How often a serving process looks for a newly deployed detector (one small query).
DEPLOY_POLL_SECONDS = 5.0


def deployed_detector_dir() -> tuple[str, Path] | None:
    """(model id, local DET_DIR) of the detector deployed through the registry, or None.

    A deploy step marks one ``models`` row deployed; its files are materialised from the
    object store into ``<data_dir>/deployed/<model_id>`` once per process.
    """
    from sqlalchemy import select

    from labelfree.core.db import session_scope
    from labelfree.core.models import Model
    from labelfree.core.store import get_store

    with session_scope() as session:
        row = session.execute(select(Model).where(Model.kind == "detector", Model.deployed.is_(True))
                              .order_by(Model.created_at.desc()).limit(1)).scalar_one_or_none()
        if row is None:
            return None
        model_id, prefix = row.id, row.store_prefix
    target = get_settings().data_dir / "deployed" / model_id
    if not (target / "manifest.json").is_file():
        get_store().get_dir(prefix, target)
    return model_id, target


def _wanted() -> tuple[str | None, Path | None]:
    """What should serve now: the configured DET_DIR, else the registry's deployed detector.

    With Triton the server holds the model, but the deployed detector's manifest still gives
    its labels, threshold and category ids (a deploy writes the registry row and the Triton
    version together), so both backends report the same categories for the same model.
    Only with nothing deployed does Triton's own input shape stand in for a manifest.
    """
    s = get_settings()
    if s.detector_dir is not None:
        return "configured", s.detector_dir
    found = deployed_detector_dir()
    if found:
        return found[0], found[1]
    return ("triton", None) if s.inference_backend == "triton" else (None, None)


def get_detector() -> Detector:
    """The detector to serve with, built on first use and rebuilt when a new one is deployed."""
    global _detector, _detector_key, _checked_at
    now = time.monotonic()
    if _detector is not None and (_detector_key == "configured" or now - _checked_at < DEPLOY_POLL_SECONDS):
        return _detector
    with _lock:
        key, detector_dir = _wanted()
        _checked_at = time.monotonic()
        if _detector is not None and key == _detector_key:
            return _detector
        if key is None:
            raise LabelfreeError("unavailable", "no detector deployed yet: finish a run (labelfree run ...) "
                                                "or set LABELFREE_DETECTOR_DIR", retry_after=30)
        s = get_settings()
        backend = make_backend(s.inference_backend, detector_dir=detector_dir, triton_url=s.triton_url,
                               triton_model=s.triton_model, triton_version=s.triton_model_version,
                               onnx_providers=s.onnx_providers, onnx_threads=s.onnx_threads)
        try:
            fresh = make_detector(backend, detector_dir)
        except BaseException:
            backend.close()
            raise
        old, _detector, _detector_key = _detector, fresh, key
        if old is not None:
            old.close()
    return _detector


def reset_detector() -> None:
    """Drop the detector (tests switch models and backends between cases)."""
    global _detector, _detector_key, _checked_at
    with _lock:
        if _detector is not None:
            _detector.close()
        _detector, _detector_key, _checked_at = None, None, 0.0


def detector_ready() -> None:
    """Readiness for /readyz: raise when a detector should serve but cannot.

    A service with nothing deployed yet is ready (it answers detection calls with 503 and a
    reason), so a fresh install comes up; a configured detector whose backend is down is not.
    """
    key, _ = _wanted()
    if key is None:
        return
    get_detector().backend.check_ready()


class _StageMetrics(NamedTuple):
    """One backend and entry's metric children, bound once: ``labels()`` takes a lock and builds
    its key on every call, and a request would make five such calls."""

    in_flight: Gauge
    decode: Histogram
    inference: Histogram
    images: Histogram


_stage_metrics: dict[tuple[str, str], _StageMetrics] = {}


def _metrics_for(backend: str, entry: str) -> _StageMetrics:
    found = _stage_metrics.get((backend, entry))
    if found is None:
        found = _stage_metrics[(backend, entry)] = _StageMetrics(
            IN_FLIGHT.labels(backend, entry), STAGE_SECONDS.labels(backend, "decode"),
            STAGE_SECONDS.labels(backend, "inference"), IMAGES.labels(backend))
    return found


def _decode(data: bytes, threshold: float | None) -> tuple[Detector, object, float, float]:
    """(detector, decoded image, start, decoded) for one request; raises its 4xx or 503."""
    if threshold is not None and not 0.0 <= threshold <= 1.0:
        raise LabelfreeError("bad_request", f"threshold must be within [0, 1], got {threshold}")
    start = time.perf_counter()
    s = get_settings()
    try:
        detector = get_detector()
    except LabelfreeError:
        decode_image(data, max_pixels=s.max_image_pixels)  # a bad image is a 4xx even while the model is down
        raise
    preview = detector_preview_side(detector.spec.input_size)  # a 12 MP frame decodes at 1/8 scale
    image = decode_image(data, max_pixels=s.max_image_pixels, preview_side=preview)
    return detector, image, start, time.perf_counter()


def _answer(detector: Detector, file: str, detections: list[dict], start: float, decoded: float,
            done: float, metrics: _StageMetrics) -> dict:
    metrics.decode.observe(decoded - start)
    metrics.inference.observe(done - decoded)
    return {
        "image": image_entry(file, detections),
        "detection_categories": detector.spec.categories,
        "detector": detector.spec.name,
        "backend": detector.backend.name,
        "timing_ms": {"decode": round((decoded - start) * 1000, 3), "inference": round((done - decoded) * 1000, 3),
                      "total": round((done - start) * 1000, 3)},
    }


def detect_one(data: bytes, *, file: str = "image", threshold: float | None = None,
               entry: str = "rest") -> dict:
    """Decode and detect one encoded image.

    Returns ``{"image": <MegaDetector images[] entry>, "detection_categories": {...},
    "detector": name, "timing_ms": {"decode", "inference", "total"}}``. Raises
    ImageDecodeError (4xx) for a bad image and LabelfreeError("unavailable") when the
    model cannot serve. With the model in this process, concurrent calls from threads (gRPC's
    pool) share backend calls through the ThreadBatcher.
    """
    out = detect_many([(data, file, threshold)], entry=entry)[0]
    if isinstance(out, ImageDecodeError):
        raise out
    return out


def detect_many(items: list[tuple[bytes, str, float | None]], *, entry: str = "grpc") -> list:
    """``detect_one`` for several ``(data, file, threshold)`` at once, their images in one backend call
    (the requests of a gRPC stream that are already in). A bad image gets its ImageDecodeError in its
    place in the list; a bad threshold, or a model that cannot serve, raises for all. A lone image
    joins the ThreadBatcher, when there is one, so concurrent callers share backend calls."""
    decoded: list = []
    for data, _, threshold in items:
        try:
            decoded.append(_decode(data, threshold))
        except ImageDecodeError as exc:
            decoded.append(exc)
    good = [i for i, d in enumerate(decoded) if not isinstance(d, ImageDecodeError)]
    results: list = list(decoded)
    batcher = thread_batcher()
    while good:  # one call per detector: a deploy may swap it between two decodes
        detector = decoded[good[0]][0]
        group = [i for i in good if decoded[i][0] is detector]
        if batcher is not None and len(group) == 1:
            detections = [batcher.detect(detector, decoded[group[0]][1], items[group[0]][2], entry)]
        else:
            detections = _run_batch(detector, [decoded[i][1] for i in group], [items[i][2] for i in group], entry)
        done, metrics = time.perf_counter(), _metrics_for(detector.backend.name, entry)
        for i, found in zip(group, detections):
            results[i] = _answer(detector, items[i][1], found, decoded[i][2], decoded[i][3], done, metrics)
        good = [i for i in good if i not in group]
    return results


def _next_batch(pending: list, max_batch: int) -> tuple[list, list]:
    """(batch, rest): the first ``max_batch`` queued calls at most, all for the first call's detector
    (a batch never mixes models: a deploy swaps the detector). Each call is ``(detector, ...)``."""
    detector, n = pending[0][0], 0
    while n < min(max_batch, len(pending)) and pending[n][0] is detector:
        n += 1
    return pending[:n], pending[n:]


class RequestBatcher:
    """Runs the images of concurrent requests as one backend call, in one thread beside the event loop.

    Opportunistic: an image that arrives while no batch runs starts one after one loop turn (no
    wait; alone, on an idle server, it runs on the loop as without a batcher); images that arrive
    meanwhile, or while a batch runs, form the next one, up to ``max_batch``. On one CPU thread the
    S=128 int8 detector costs ~25% less per image at batch 4 than at batch 1, and the event loop goes
    on reading and decoding the next requests while ONNX Runtime runs: +21% req/s under 16 clients
    on 2 cores (bench/results/inference.md). A request's ``timing_ms.inference`` includes its wait
    for the batch before.
    """

    def __init__(self, max_batch: int, loop: asyncio.AbstractEventLoop):
        from concurrent.futures import ThreadPoolExecutor

        self.max_batch, self.loop = max_batch, loop
        self._pending: list[tuple[Detector, object, float | None, asyncio.Future]] = []
        self._running = False
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="detect-batch")

    async def detect(self, detector: Detector, image, threshold: float | None) -> list[dict]:
        """The detections of ``image``, run in a batch with the images of concurrent requests."""
        future = self.loop.create_future()
        self._pending.append((detector, image, threshold, future))
        if not self._running:
            self._running = True
            # One loop turn first: requests whose bodies are already here join this batch.
            self.loop.call_soon(self._launch, True)
        return await future

    def _launch(self, fresh: bool = False) -> None:
        """Start the next batch; ``fresh``: the batcher was idle (no batch just finished)."""
        batch, self._pending = _next_batch(self._pending, self.max_batch)
        detector, images, thresholds = batch[0][0], [b[1] for b in batch], [b[2] for b in batch]
        if fresh and len(batch) == 1 and not self._pending:
            # A lone request on an idle server runs here, on the loop: two thread hand-offs would add
            # ~0.6-0.9 ms to it on a 2-core machine. Batches that follow a batch always go to the thread,
            # so under load the loop keeps reading and decoding while the model runs.
            try:
                results, failed = _run_batch(detector, images, thresholds), None
            except Exception as exc:  # noqa: BLE001 - handed to the request, as from the thread
                results, failed = None, exc
            self._deliver(batch, results, failed)
            return
        run = self.loop.run_in_executor(self._pool, _run_batch, detector, images, thresholds)
        run.add_done_callback(lambda done: self._finished(batch, done))

    def _finished(self, batch: list, done: asyncio.Future) -> None:
        failed = asyncio.CancelledError() if done.cancelled() else done.exception()
        self._deliver(batch, None if failed else done.result(), failed)

    def _deliver(self, batch: list, results: list | None, failed: BaseException | None) -> None:
        for i, (_, _, _, future) in enumerate(batch):
            if future.done():  # its request went away
                continue
            if failed is not None:
                future.set_exception(failed)
            else:
                future.set_result(results[i])
        if self._pending:
            self._launch()
        else:
            self._running = False

    def close(self) -> None:
        self._pool.shutdown(wait=False)


class _Waiter:
    """A thread's place in a ThreadBatcher: woken when its detections are in, or to lead the next batch."""

    __slots__ = ("event", "detections", "error", "finished")

    def __init__(self):
        self.event = threading.Event()
        self.detections: list[dict] | None = None
        self.error: BaseException | None = None
        self.finished = False

    def outcome(self) -> list[dict]:
        if self.error is not None:
            raise self.error
        return self.detections


class ThreadBatcher:
    """RequestBatcher for callers on threads (gRPC's pool): concurrent calls' images as one backend call.

    Leader and followers: a call that finds no batch running runs one at once, in its own thread, so a
    lone call costs a lock and no thread hand-off. Calls that arrive while a batch runs queue; when it
    ends, the first of them wakes to run the next batch (up to ``max_batch``) for all of them.
    """

    def __init__(self, max_batch: int):
        self.max_batch = max_batch
        self._lock = threading.Lock()
        self._pending: list[tuple[Detector, object, float | None, _Waiter]] = []
        self._running = False

    def detect(self, detector: Detector, image, threshold: float | None, entry: str = "grpc") -> list[dict]:
        """The detections of ``image``, run in a batch with the images of concurrent calls."""
        me = _Waiter()
        with self._lock:
            self._pending.append((detector, image, threshold, me))
            lead, self._running = not self._running, True
        if not lead:
            me.event.wait()
            if me.finished:
                return me.outcome()
        # This thread leads: its own call is the first pending one, so it is in the batch.
        try:
            with self._lock:
                batch, self._pending = _next_batch(self._pending, self.max_batch)
            try:
                results, failed = _run_batch(batch[0][0], [b[1] for b in batch], [b[2] for b in batch], entry), None
            except BaseException as exc:  # noqa: BLE001 - handed to every call of the batch
                results, failed = None, exc
            for i, (_, _, _, waiter) in enumerate(batch):
                waiter.detections, waiter.error = (None, failed) if failed is not None else (results[i], None)
                waiter.finished = True
                if waiter is not me:
                    waiter.event.set()
        finally:
            with self._lock:
                if self._pending:
                    self._pending[0][3].event.set()  # it leads the next batch
                else:
                    self._running = False
        return me.outcome()


def _run_batch(detector: Detector, images: list, thresholds: list[float | None],
               entry: str = "rest") -> list[list[dict]]:
    metrics = _metrics_for(detector.backend.name, entry)
    metrics.in_flight.inc(len(images))
    try:
        return detector.detect(images, threshold=thresholds)
    finally:
        metrics.in_flight.dec(len(images))
        metrics.images.observe(len(images))


_batcher: RequestBatcher | None = None
_thread_batcher: ThreadBatcher | None = None


def thread_batcher() -> ThreadBatcher | None:
    """The process's batcher for detection called from threads, when the model runs in this process
    (ONNX Runtime) and ``inference_batch`` > 1; None otherwise (Triton batches on its own side)."""
    global _thread_batcher
    s = get_settings()
    if s.inference_batch <= 1 or s.inference_backend != "onnxruntime":
        return None
    found = _thread_batcher
    if found is None or found.max_batch != s.inference_batch:
        with _lock:
            if _thread_batcher is None or _thread_batcher.max_batch != s.inference_batch:
                _thread_batcher = ThreadBatcher(s.inference_batch)
            found = _thread_batcher
    return found


def request_batcher() -> RequestBatcher | None:
    """The running event loop's batcher for in-process detection (None when ``inference_batch`` is 1)."""
    global _batcher
    size = get_settings().inference_batch
    if size <= 1:
        return None
    loop = asyncio.get_running_loop()
    if _batcher is None or _batcher.max_batch != size or _batcher.loop is not loop:
        if _batcher is not None:
            _batcher.close()
        _batcher = RequestBatcher(size, loop)
    return _batcher


async def detect_one_async(data: bytes, *, file: str = "image", threshold: float | None = None) -> dict:
    """``detect_one`` for the event loop of the in-process (ONNX Runtime) REST path: the decode runs
    here, the model in the process's RequestBatcher together with concurrent requests' images."""
    batcher = request_batcher()
    if batcher is None:
        return detect_one(data, file=file, threshold=threshold)
    detector, image, start, decoded = _decode(data, threshold)
    detections = await batcher.detect(detector, image, threshold)
    return _answer(detector, file, detections, start, decoded, time.perf_counter(),
                   _metrics_for(detector.backend.name, "rest"))
