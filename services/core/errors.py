"""One domain error. Business code raises LabelfreeError; one handler renders it.

Rendered as ``{"error": {"code": ..., "detail": ...}}`` with the status for its code.
"""

from __future__ import annotations

STATUS_FOR_CODE = {
    "bad_request": 400,
    "not_found": 404,
    "conflict": 409,
    "payload_too_large": 413,
    "unsupported_media_type": 415,
    "invalid": 422,
    "unavailable": 503,
}


class LabelfreeError(Exception):
    """An error with a stable code that maps to an HTTP status and a CLI message."""

    def __init__(self, code: str, detail: str, *, retry_after: int | None = None, extra: dict | None = None):
        if code not in STATUS_FOR_CODE:
            raise ValueError(f"unknown error code {code!r}")
        super().__init__(detail)
        self.code = code
        self.detail = detail
        self.retry_after = retry_after
        self.extra = extra or {}

    @property
    def status(self) -> int:
        return STATUS_FOR_CODE[self.code]

    def to_dict(self) -> dict:
        body = {"code": self.code, "detail": self.detail}
        body.update(self.extra)
        return {"error": body}


def not_found(what: str, ident: object) -> LabelfreeError:
    return LabelfreeError("not_found", f"{what} {ident} does not exist")


def bad_request(detail: str, **extra) -> LabelfreeError:
    return LabelfreeError("bad_request", detail, extra=extra or None)


def unavailable(detail: str, retry_after: int = 5) -> LabelfreeError:
    return LabelfreeError("unavailable", detail, retry_after=retry_after)
