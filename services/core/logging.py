"""JSON log lines carrying the request id of the HTTP request that caused them."""

from __future__ import annotations

import contextvars
import json
import logging
import sys
import time

request_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)


class JsonFormatter(logging.Formatter):
    """One JSON object per record: ``ts`` (UTC, microseconds), level, logger, msg, the request id,
    and the request fields the HTTP observer passes as ``extra``.

    An API process formats a line per request, so the two costly parts are kept cheap: the
    timestamp's date and time are formatted once per second, and one encoder is reused (a
    ``json.dumps`` call with ``default=`` builds a new one each time)."""

    FIELDS = ("method", "path", "status", "duration_ms", "service")
    _encode = json.JSONEncoder(default=str).encode

    def __init__(self) -> None:
        super().__init__()
        self._second, self._stamp = -1, ""

    def timestamp(self, created: float) -> str:
        second = int(created)
        if second != self._second:  # a race here only recomputes the same string
            self._second, self._stamp = second, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        return f"{self._stamp}.{min(999_999, round((created - second) * 1_000_000)):06d}+00:00"

    def format(self, record: logging.LogRecord) -> str:
        line = {"ts": self.timestamp(record.created), "level": record.levelname, "logger": record.name,
                "msg": record.getMessage()}
        rid = request_id_var.get()
        if rid:
            line["request_id"] = rid
        fields = record.__dict__
        for key in self.FIELDS:
            if key in fields:
                line[key] = fields[key]
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        return self._encode(line)


def configure_logging(level: str = "INFO", json_lines: bool = True) -> None:
    """One handler on stderr for the API process: JSON lines (or plain text).

    Neither format prints the caller's file and line, the thread or the process, so the record
    skips looking them up (the logging HOWTO's "Optimization" switches): the stack walk of
    ``findCaller`` alone was ~1% of an inference API process's CPU under load."""
    logging._srcfile = None  # no findCaller stack walk per record
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if json_lines else logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
