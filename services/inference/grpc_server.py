"""``labelfree.v1.DetectService`` over gRPC, served beside REST in the same process.

Both share the process's one detector (``runtime.get_detector``); with it in process, the
images of concurrent calls run as one model call (``runtime.ThreadBatcher``), and so do the
requests of a stream that arrive while the previous ones run. A bad image gets a
response with ``failure`` set (the stream goes on); a model that cannot serve ends the call
with ``UNAVAILABLE``; other bad requests with ``INVALID_ARGUMENT``.
"""

from __future__ import annotations

import logging
import queue
import threading
from concurrent import futures
from contextlib import asynccontextmanager
from typing import Iterator

import grpc

from labelfree.core.errors import LabelfreeError
from labelfree.core.images import ImageDecodeError
from labelfree.core.settings import get_settings
from labelfree.inference import detect_pb2, detect_pb2_grpc
from labelfree.inference.runtime import detect_many

log = logging.getLogger(__name__)

_STATUS = {"unavailable": grpc.StatusCode.UNAVAILABLE, "payload_too_large": grpc.StatusCode.RESOURCE_EXHAUSTED,
           "not_found": grpc.StatusCode.NOT_FOUND}


def _failure(request: detect_pb2.DetectRequest, max_bytes: int) -> str | None:
    """Why a request is refused before decoding, or None."""
    if not request.image:
        return "empty image body"
    if len(request.image) > max_bytes:
        return f"image is {len(request.image)} bytes, over the limit of {max_bytes}"
    return None


def _reply(request: detect_pb2.DetectRequest, out: dict | ImageDecodeError) -> detect_pb2.DetectResponse:
    if isinstance(out, ImageDecodeError):
        return detect_pb2.DetectResponse(file=request.file, failure=out.detail)
    timing = out["timing_ms"]
    return detect_pb2.DetectResponse(
        file=request.file,
        detections=[detect_pb2.Detection(category=d["category"], conf=d["conf"], bbox=d["bbox"])
                    for d in out["image"]["detections"]],
        decode_ms=timing["decode"], inference_ms=timing["inference"], total_ms=timing["total"])


def _responses(requests: list[detect_pb2.DetectRequest], max_bytes: int) -> list[detect_pb2.DetectResponse]:
    """Detect on the requests, their images in one model call; bad images come back as ``failure``,
    other errors raise."""
    replies: list = [None] * len(requests)
    todo = []
    for i, request in enumerate(requests):
        failure = _failure(request, max_bytes)
        if failure is not None:
            replies[i] = detect_pb2.DetectResponse(file=request.file, failure=failure)
        else:
            todo.append(i)
    items = [(requests[i].image, requests[i].file or "image", requests[i].threshold or None) for i in todo]
    outs = detect_many(items, entry="grpc") if items else []
    for i, out in zip(todo, outs):
        replies[i] = _reply(requests[i], out)
    return replies


def _stream_batches(requests: Iterator[detect_pb2.DetectRequest], max_batch: int) -> Iterator[list]:
    """The stream's requests in groups: each group is what has arrived by the time the previous one is
    answered (at least one, at most ``max_batch``), so a client that sends ahead gets batched model
    calls and one that waits for each answer still gets it at once."""
    if max_batch <= 1:
        for request in requests:
            yield [request]
        return
    # Read ahead at most two groups: gRPC's flow control holds back a client that sends faster.
    arrived: queue.Queue = queue.Queue(maxsize=2 * max_batch)
    end, stopped = object(), threading.Event()

    def put(item) -> bool:
        while not stopped.is_set():
            try:
                arrived.put(item, timeout=0.2)
                return True
            except queue.Full:
                pass
        return False

    def read():
        try:
            for request in requests:
                if not put(request):
                    return
        except Exception as exc:  # noqa: BLE001 - the stream broke (the client went away)
            put(exc)
            return
        put(end)

    threading.Thread(target=read, name="grpc-stream-reader", daemon=True).start()
    try:
        while True:
            group = [arrived.get()]
            while len(group) < max_batch and group[-1] is not end and not isinstance(group[-1], Exception):
                try:
                    group.append(arrived.get_nowait())
                except queue.Empty:
                    break
            last = group[-1]
            if last is end or isinstance(last, Exception):
                group.pop()
            if group:
                yield group
            if last is end:
                return
            if isinstance(last, Exception):
                raise last
    finally:
        stopped.set()  # the reader stops at its next request


class DetectServicer(detect_pb2_grpc.DetectServiceServicer):
    def __init__(self, max_bytes: int):
        self.max_bytes = max_bytes

    def _abort(self, context: grpc.ServicerContext, exc: LabelfreeError):
        context.abort(_STATUS.get(exc.code, grpc.StatusCode.INVALID_ARGUMENT), exc.detail)

    def Detect(self, request, context):  # noqa: N802 (gRPC's method name)
        try:
            return _responses([request], self.max_bytes)[0]
        except LabelfreeError as exc:
            self._abort(context, exc)

    def DetectStream(self, request_iterator, context) -> Iterator[detect_pb2.DetectResponse]:  # noqa: N802
        try:
            for group in _stream_batches(request_iterator, get_settings().inference_batch):
                yield from _responses(group, self.max_bytes)
        except LabelfreeError as exc:
            self._abort(context, exc)


def start_grpc_server(port: int, *, host: str = "127.0.0.1", max_bytes: int, workers: int = 16) -> grpc.Server:
    """Start DetectService on ``host:port`` (port 0 = any free one; read it from ``server.port``)."""
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=workers), options=[
        ("grpc.max_receive_message_length", max_bytes + 64 * 1024),
        ("grpc.max_send_message_length", 16 * 1024 * 1024),
    ])
    detect_pb2_grpc.add_DetectServiceServicer_to_server(DetectServicer(max_bytes), server)
    bound = server.add_insecure_port(f"{host}:{port}")
    if bound == 0:
        raise OSError(f"cannot bind gRPC port {host}:{port}")
    server.port = bound  # type: ignore[attr-defined]
    server.start()
    log.info("gRPC DetectService on %s:%d", host, bound)
    return server


def with_grpc(app):
    """Wrap a FastAPI app's lifespan so gRPC starts and stops with it on Settings' ``grpc_port`` (0 = off)."""
    inner = app.router.lifespan_context

    @asynccontextmanager
    async def lifespan(a):
        s = get_settings()
        server = start_grpc_server(s.grpc_port, host=s.api_host, max_bytes=s.max_upload_bytes) if s.grpc_port else None
        a.state.grpc_server = server
        try:
            async with inner(a) as state:
                yield state
        finally:
            if server is not None:
                server.stop(grace=2)

    app.router.lifespan_context = lifespan
    return app
