"""uvicorn's HTTP protocol with the writes of one event-loop turn sent as one.

uvicorn writes a response's status line and headers, then its body, as two ``transport.write``
calls, and uvloop sends each at once. With ``TCP_NODELAY`` (uvicorn sets it) that is two
``write`` syscalls and two TCP segments a response, so the client wakes twice as well. On the
inference API a response is ~1 ms of model, and the extra send is a visible share of the rest.

``CoalescingHttpToolsProtocol`` hands its request cycles a transport that buffers writes and
flushes them on the loop's next turn (``call_soon``), as one ``write``. Nothing waits: the flush
runs as soon as the current callback returns. ``close`` flushes first, ``abort`` drops. Serve
with ``uvicorn --http labelfree.core.http_protocol:CoalescingHttpToolsProtocol``.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

PROTOCOL = "labelfree.core.http_protocol:CoalescingHttpToolsProtocol"


# Past this many buffered bytes a write goes out at once: a body streamed without yielding to the loop
# then still meets the real transport's flow control instead of piling up here.
MAX_PENDING = 64 * 1024


class CoalescingTransport:
    """A transport proxy: writes made in one event-loop turn go out as one ``write``."""

    __slots__ = ("_transport", "_loop", "_pending", "_size")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop):
        self._transport = transport
        self._loop = loop
        self._pending: list[bytes] | None = None
        self._size = 0

    def write(self, data: bytes) -> None:
        if not data:
            return
        if self._pending is None:
            self._pending, self._size = [data], len(data)
            self._loop.call_soon(self.flush)
        else:
            self._pending.append(data)
            self._size += len(data)
        if self._size > MAX_PENDING:
            self.flush()  # the scheduled flush then finds nothing

    def writelines(self, lines) -> None:
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        pending, self._pending = self._pending, None
        if pending and not self._transport.is_closing():
            self._transport.write(pending[0] if len(pending) == 1 else b"".join(pending))

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def write_eof(self) -> None:
        self.flush()
        self._transport.write_eof()

    def abort(self) -> None:
        self._pending = None
        self._transport.abort()

    def get_write_buffer_size(self) -> int:
        return self._transport.get_write_buffer_size() + (self._size if self._pending else 0)

    def is_closing(self) -> bool:
        return self._transport.is_closing()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self._transport.get_extra_info(name, default)

    def pause_reading(self) -> None:
        self._transport.pause_reading()

    def resume_reading(self) -> None:
        self._transport.resume_reading()

    def __getattr__(self, name: str) -> Any:  # set_write_buffer_limits, is_reading, ...
        return getattr(self._transport, name)


class CoalescingHttpToolsProtocol(HttpToolsProtocol):
    """``HttpToolsProtocol`` whose responses leave in one send (see the module docstring)."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(CoalescingTransport(transport, self.loop))  # type: ignore[arg-type]
