"""JSON log lines carrying the request id of the HTTP request that caused them."""

from __future__ import annotations

import contextvars
import json
import logging
import sys
from datetime import datetime, timezone

request_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = {
            "ts": datetime.fromtimestamp(record.created, timezone.utc).isoformat(),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        rid = request_id_var.get()
        if rid:
            line["request_id"] = rid
        for key in ("method", "path", "status", "duration_ms", "service"):
            if hasattr(record, key):
                line[key] = getattr(record, key)
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str)


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
