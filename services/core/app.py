"""The FastAPI app factory every service uses: probes, metrics, logs, errors, job endpoints."""

from __future__ import annotations

import logging
import random
import time
import uuid
from typing import Callable, Iterable

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from prometheus_client import Counter, Gauge, Histogram
from sqlalchemy.orm import Session
from starlette.exceptions import HTTPException as StarletteHTTPException

from labelfree import __version__
from labelfree.core import jobs
from labelfree.core.db import get_session, ping_database
from labelfree.core.errors import LabelfreeError
from labelfree.core.logging import configure_logging, request_id_var
from labelfree.core.metrics import CONTENT_TYPE_LATEST, exposition
from labelfree.core.settings import get_settings

log = logging.getLogger("labelfree.http")

REQUEST_LATENCY = Histogram(
    "labelfree_http_request_duration_seconds", "HTTP request latency", ["service", "method", "route", "status"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
IN_FLIGHT = Gauge("labelfree_http_requests_in_flight", "HTTP requests being served", ["service"],
                  multiprocess_mode="livesum")
ERRORS = Counter("labelfree_http_errors_total", "HTTP responses with status >= 400", ["service", "code"])

NO_OTEL = {"tracing": False, "metrics": False, "logs": False}

ReadyCheck = Callable[[], None]


def ping_broker() -> None:
    """Raise if the Celery broker cannot be reached within a second or two."""
    url = get_settings().broker_url
    if url.startswith(("redis://", "rediss://")):
        import redis

        redis.Redis.from_url(url, socket_connect_timeout=1, socket_timeout=1).ping()
        return
    from labelfree.core.celery_app import celery_app

    with celery_app.connection_for_write() as conn:
        conn.ensure_connection(max_retries=1, timeout=2)


class ObserveMiddleware:
    """Request id, latency histogram, in-flight gauge and one JSON log line per request.

    Plain ASGI rather than ``@app.middleware("http")``: the latter wraps every response in
    a streaming body and costs about a millisecond per request (bench/RESULTS.md).
    """

    QUIET = ("/healthz", "/readyz", "/metrics")

    def __init__(self, app, service: str):
        self.app = app
        self.service = service
        self.in_flight = IN_FLIGHT.labels(service)
        self._latency: dict[tuple[str, str, int], Histogram] = {}  # (method, route, status) -> bound child

    def latency(self, method: str, route: str, status: int) -> Histogram:
        """The latency histogram's child for these labels, bound once (``labels()`` takes a lock
        and builds the key on every call)."""
        child = self._latency.get((method, route, status))
        if child is None:
            child = self._latency[(method, route, status)] = REQUEST_LATENCY.labels(
                self.service, method, route, str(status))
        return child

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rid = None
        for key, value in scope.get("headers", ()):
            if key == b"x-request-id":
                rid = value.decode("latin-1")[:128]
                break
        # Ids need to be unique, not unguessable: 128 random bits without uuid4's urandom syscall.
        rid = rid or f"{random.getrandbits(128):032x}"
        token = request_id_var.set(rid)
        status = 500
        header = (b"x-request-id", rid.encode("latin-1"))

        async def send_with_id(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message = {**message, "headers": [*message.get("headers", ()), header]}
            await send(message)

        self.in_flight.inc()
        start = time.perf_counter()
        try:
            await self.app(scope, receive, send_with_id)
        finally:
            elapsed = time.perf_counter() - start
            self.in_flight.dec()
            route = scope.get("route")
            self.latency(scope["method"], getattr(route, "path", "unmatched"), status).observe(elapsed)
            if scope["path"] not in self.QUIET:
                log.info("request", extra={"method": scope["method"], "path": scope["path"], "status": status,
                                           "duration_ms": round(elapsed * 1000, 2), "service": self.service})
            request_id_var.reset(token)


def labelfree_error_response(service: str, exc: LabelfreeError) -> JSONResponse:
    """The JSON answer to a LabelfreeError (4xx/5xx with its code and detail, Retry-After when set);
    counted in ``labelfree_http_errors_total``. Shared by the app's handler and pure ASGI routes."""
    ERRORS.labels(service, exc.code).inc()
    headers = {"Retry-After": str(exc.retry_after)} if exc.retry_after else None
    return JSONResponse(exc.to_dict(), status_code=exc.status, headers=headers)


def _error_response(status: int, code: str, detail, headers: dict | None = None) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "detail": detail}}, status_code=status, headers=headers)


jobs_router = APIRouter(prefix="/v1/jobs", tags=["jobs"])


@jobs_router.get("/{job_id}")
def read_job(job_id: uuid.UUID, session: Session = Depends(get_session)) -> dict:
    return jobs.job_to_dict(jobs.get_job(session, str(job_id)))


@jobs_router.post("/{job_id}/cancel")
def cancel_job(job_id: uuid.UUID, session: Session = Depends(get_session)) -> dict:
    job = jobs.request_cancel(session, str(job_id))
    if job.state == jobs.JobState.CANCELLED.value and job.run_id:
        # A queued step is cancelled here, and no worker will ever report it: end its run now,
        # or the run (and `labelfree run` following it) waits forever. A running step is
        # cancelled by its worker, which ends the run itself.
        from labelfree.core import runs

        runs.end_run(session, job.run_id, f"step {job.kind}: cancelled on request", jobs.JobState.CANCELLED)
    return jobs.job_to_dict(job)


def create_app(name: str, routers: Iterable[APIRouter] = (), ready_checks: Iterable[ReadyCheck] = (),
               inner_middleware: Iterable[tuple[type, dict]] = ()) -> FastAPI:
    """``inner_middleware``: (class, kwargs) of pure ASGI middleware that sit inside the request
    observer (so their requests are timed, counted and logged like any other), innermost last."""
    settings = get_settings()
    configure_logging(settings.log_level, settings.log_json)
    # Metrics are Prometheus (above) and logs are JSON lines: FastAPI's native OpenTelemetry stays
    # off, which also spares each request its look-up of the global tracer/meter/logger providers.
    app = FastAPI(title=f"labelfree {name}", version=__version__, telemetry=NO_OTEL)
    checks: list[tuple[str, ReadyCheck]] = [("database", ping_database), ("broker", ping_broker)]
    checks += [(getattr(c, "__name__", "check"), c) for c in ready_checks]

    for cls, kwargs in reversed(list(inner_middleware)):
        app.add_middleware(cls, **kwargs)
    app.add_middleware(ObserveMiddleware, service=name)

    @app.exception_handler(LabelfreeError)
    async def labelfree_error(_request: Request, exc: LabelfreeError):
        return labelfree_error_response(name, exc)

    @app.exception_handler(RequestValidationError)
    async def validation_error(_request: Request, exc: RequestValidationError):
        ERRORS.labels(name, "invalid").inc()
        detail = [{"loc": list(e.get("loc", ())), "msg": e.get("msg")} for e in exc.errors()]
        return _error_response(422, "invalid", detail)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_request: Request, exc: StarletteHTTPException):
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return _error_response(exc.status_code, code, exc.detail)

    @app.get("/healthz", tags=["probes"])
    def healthz() -> dict:
        return {"status": "ok", "service": name, "version": __version__}

    @app.get("/readyz", tags=["probes"])
    def readyz():
        failures = {}
        for check_name, check in checks:
            try:
                check()
            except Exception as exc:  # any failure means not ready; say which
                failures[check_name] = f"{type(exc).__name__}: {exc}"[:300]
        if failures:
            return JSONResponse({"status": "unavailable", "failures": failures}, status_code=503,
                                headers={"Retry-After": "5"})
        return {"status": "ready", "service": name}

    @app.get("/metrics", tags=["probes"])
    def metrics() -> Response:
        return Response(exposition(), media_type=CONTENT_TYPE_LATEST)

    app.include_router(jobs_router)
    for router in routers:
        app.include_router(router)
    return app
