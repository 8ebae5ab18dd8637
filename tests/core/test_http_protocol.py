"""The uvicorn protocol the APIs serve with: one send per response, HTTP unchanged."""

from __future__ import annotations

import asyncio
import socket
import threading
import time

import pytest
import uvicorn

from labelfree.core.http_protocol import MAX_PENDING, PROTOCOL, CoalescingTransport


class RecordingTransport(asyncio.Transport):
    """Stands in for the socket: records each write the proxy makes."""

    def __init__(self):
        super().__init__()
        self.writes: list[bytes] = []
        self.closed = False
        self.aborted = False

    def write(self, data):
        self.writes.append(bytes(data))

    def is_closing(self):
        return self.closed or self.aborted

    def close(self):
        self.closed = True

    def abort(self):
        self.aborted = True

    def get_write_buffer_size(self):
        return 0


def test_writes_of_one_loop_turn_leave_as_one_write():
    async def main():
        real = RecordingTransport()
        t = CoalescingTransport(real, asyncio.get_running_loop())
        t.write(b"HTTP/1.1 200 OK\r\n\r\n")
        t.write(b"")
        t.write(b"body")
        assert real.writes == [] and t.get_write_buffer_size() == 23
        await asyncio.sleep(0)
        t.write(b"next")
        await asyncio.sleep(0)
        return real.writes

    assert asyncio.run(main()) == [b"HTTP/1.1 200 OK\r\n\r\nbody", b"next"]


def test_a_large_body_goes_out_at_once_instead_of_piling_up():
    async def main():
        real = RecordingTransport()
        t = CoalescingTransport(real, asyncio.get_running_loop())
        t.write(b"headers")
        t.write(b"x" * MAX_PENDING)  # over the bound: sent now, with what was pending
        sent_now = list(real.writes)
        t.write(b"tail")
        await asyncio.sleep(0)
        return sent_now, real.writes

    sent_now, writes = asyncio.run(main())
    assert sent_now == [b"headers" + b"x" * MAX_PENDING]
    assert writes == [b"headers" + b"x" * MAX_PENDING, b"tail"]


def test_close_sends_what_is_pending_first_and_abort_drops_it():
    async def main():
        real, dropped = RecordingTransport(), RecordingTransport()
        loop = asyncio.get_running_loop()
        t = CoalescingTransport(real, loop)
        t.write(b"last words")
        t.close()
        a = CoalescingTransport(dropped, loop)
        a.write(b"never")
        a.abort()
        await asyncio.sleep(0)  # the scheduled flushes find nothing left to send
        return real, dropped

    real, dropped = asyncio.run(main())
    assert real.writes == [b"last words"] and real.closed
    assert dropped.writes == [] and dropped.aborted


async def _app(scope, receive, send):
    if scope["type"] != "http":
        return
    await receive()
    if scope["path"] == "/stream":  # chunks with a yield between them, as a large CSV export sends
        await send({"type": "http.response.start", "status": 200, "headers": [(b"transfer-encoding", b"chunked")]})
        for part in (b"a,b\n", b"1,2\n", b"3,4\n"):
            await send({"type": "http.response.body", "body": part, "more_body": True})
            await asyncio.sleep(0.01)
        await send({"type": "http.response.body", "body": b""})
        return
    body = b'{"ok": true}'
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


@pytest.fixture()
def server():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    srv = uvicorn.Server(uvicorn.Config(_app, host="127.0.0.1", port=port, http=PROTOCOL, log_level="warning",
                                        lifespan="off"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    for _ in range(200):
        if srv.started:
            break
        time.sleep(0.02)
    assert srv.started
    yield port
    srv.should_exit = True
    thread.join(10)


def _read_response(sock: socket.socket, until: bytes) -> bytes:
    data = b""
    while until not in data:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    return data


def test_real_server_keeps_alive_streams_and_rejects_garbage(server):
    with socket.create_connection(("127.0.0.1", server), timeout=5) as sock:
        for _ in range(3):  # keep-alive: three answers on one connection, each whole
            sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            answer = _read_response(sock, b'{"ok": true}')
            assert answer.startswith(b"HTTP/1.1 200 OK") and answer.endswith(b'{"ok": true}')
        sock.sendall(b"GET /stream HTTP/1.1\r\nHost: x\r\n\r\n")
        streamed = _read_response(sock, b"0\r\n\r\n")
        assert b"a,b\n" in streamed and b"3,4\n" in streamed and streamed.endswith(b"0\r\n\r\n")
    with socket.create_connection(("127.0.0.1", server), timeout=5) as sock:
        sock.sendall(b"NOT HTTP AT ALL\r\n\r\n")
        answer = _read_response(sock, b"\r\n\r\n")
        assert answer.startswith(b"HTTP/1.1 400")
        assert sock.recv(65536) in (b"", b"Invalid HTTP request received.")  # then closed
