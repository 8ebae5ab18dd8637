import json
import logging
from datetime import datetime, timezone

from labelfree.core.logging import JsonFormatter, request_id_var


def record(created: float, **extra) -> logging.LogRecord:
    rec = logging.LogRecord("labelfree.http", logging.INFO, __file__, 1, "request %s", ("x",), None)
    rec.created = created
    rec.__dict__.update(extra)
    return rec


def test_a_line_is_json_with_the_utc_time_request_id_and_request_fields():
    formatter = JsonFormatter()
    token = request_id_var.set("rid-1")
    try:
        line = json.loads(formatter.format(record(1_700_000_000.25, method="POST", path='/v1/"x"', status=201,
                                                  duration_ms=3.5, service="inference", other="dropped")))
    finally:
        request_id_var.reset(token)
    assert line == {"ts": "2023-11-14T22:13:20.250000+00:00", "level": "INFO", "logger": "labelfree.http",
                    "msg": "request x", "request_id": "rid-1", "method": "POST", "path": '/v1/"x"', "status": 201,
                    "duration_ms": 3.5, "service": "inference"}


def test_the_time_follows_each_record_across_seconds():
    formatter = JsonFormatter()
    for created in (1_700_000_000.999_999_6, 1_700_000_001.0, 1_700_000_001.123_456, 1_700_000_059.5, 1_700_003_600.0):
        ts = json.loads(formatter.format(record(created)))["ts"]
        assert abs(datetime.fromisoformat(ts) - datetime.fromtimestamp(created, timezone.utc)).total_seconds() < 2e-6


def test_values_that_are_not_json_types_are_written_as_text():
    line = json.loads(JsonFormatter().format(record(0.0, path=object.__new__(type("P", (), {"__str__": lambda s: "p"})))))
    assert line["path"] == "p" and line["ts"] == "1970-01-01T00:00:00.000000+00:00"
