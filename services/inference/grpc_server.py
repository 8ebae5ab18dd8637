"""``labelfree.v1.DetectService`` over gRPC, served beside REST in the same process.

Both share the process's one detector (``runtime.get_detector``); with it in process, the
images of concurrent calls run as one model call (``runtime.ThreadBatcher``). A bad image gets a
response with ``failure`` set (the stream goes on); a model that cannot serve ends the call
with ``UNAVAILABLE``; other bad requests with ``INVALID_ARGUMENT``.
"""

from __future__ import annotations

import logging
from concurrent import futures
from contextlib import asynccontextmanager
from typing import Iterator

import grpc

from labelfree.core.errors import LabelfreeError
from labelfree.core.images import ImageDecodeError
from labelfree.inference import detect_pb2, detect_pb2_grpc
from labelfree.inference.runtime import detect_one

log = logging.getLogger(__name__)

_STATUS = {"unavailable": grpc.StatusCode.UNAVAILABLE, "payload_too_large": grpc.StatusCode.RESOURCE_EXHAUSTED,
           "not_found": grpc.StatusCode.NOT_FOUND}


def _response(request: detect_pb2.DetectRequest, max_bytes: int) -> detect_pb2.DetectResponse:
    """Detect on one request; bad images come back as ``failure``, other errors raise."""
    if not request.image:
        return detect_pb2.DetectResponse(file=request.file, failure="empty image body")
    if len(request.image) > max_bytes:
        return detect_pb2.DetectResponse(
            file=request.file, failure=f"image is {len(request.image)} bytes, over the limit of {max_bytes}")
    try:
        out = detect_one(request.image, file=request.file or "image", threshold=request.threshold or None,
                         entry="grpc")
    except ImageDecodeError as exc:
        return detect_pb2.DetectResponse(file=request.file, failure=exc.detail)
    timing = out["timing_ms"]
    return detect_pb2.DetectResponse(
        file=request.file,
        detections=[detect_pb2.Detection(category=d["category"], conf=d["conf"], bbox=d["bbox"])
                    for d in out["image"]["detections"]],
        decode_ms=timing["decode"], inference_ms=timing["inference"], total_ms=timing["total"])


class DetectServicer(detect_pb2_grpc.DetectServiceServicer):
    def __init__(self, max_bytes: int):
        self.max_bytes = max_bytes

    def _abort(self, context: grpc.ServicerContext, exc: LabelfreeError):
        context.abort(_STATUS.get(exc.code, grpc.StatusCode.INVALID_ARGUMENT), exc.detail)

    def Detect(self, request, context):  # noqa: N802 (gRPC's method name)
        try:
            return _response(request, self.max_bytes)
        except LabelfreeError as exc:
            self._abort(context, exc)

    def DetectStream(self, request_iterator, context) -> Iterator[detect_pb2.DetectResponse]:  # noqa: N802
        try:
            for request in request_iterator:
                yield _response(request, self.max_bytes)
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
        from labelfree.core.settings import get_settings

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
