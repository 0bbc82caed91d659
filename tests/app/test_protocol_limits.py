"""The HTTP server's own bounds, on a real uvicorn (in a thread, fake engine): header size,
time to send a request, keep-alive, and the bound port."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import uvicorn

from app.api import create_app
from app.server import bind, uvicorn_config
from tests.app.conftest import make_settings
from tests.app.fakes import FakeEngine


@contextmanager
def live_server(tmp_path, **overrides) -> Iterator[int]:
    """create_app under uvicorn exactly as vpt-serve configures it, on a free port; yields the port."""
    settings = make_settings(tmp_path, port=0, log_level="warning", **overrides)
    config = uvicorn_config(create_app(settings, engine=FakeEngine()), settings)
    sock, port = bind(config)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        yield port
    finally:
        server.should_exit = True
        thread.join(15)


def _closed_within(sock: socket.socket, seconds: float) -> bytes | None:
    """Everything the server sent until it closed the connection, or None if still open after `seconds`."""
    sock.settimeout(0.1)
    got, deadline = b"", time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            continue
        except ConnectionResetError:
            return got
        if not chunk:
            return got
        got += chunk
    return None


def test_bind_reports_the_real_port_for_port_0(tmp_path):
    with live_server(tmp_path) as port:
        assert port != 0
        assert httpx.get(f"http://127.0.0.1:{port}/livez").status_code == 200


def test_oversized_headers_are_refused_and_the_server_stays_responsive(tmp_path):
    with live_server(tmp_path, max_header_bytes=16 * 1024) as port:
        url = f"http://127.0.0.1:{port}/livez"
        assert httpx.get(url, headers={"X-Pad": "a" * 12_000}).status_code == 200
        with socket.create_connection(("127.0.0.1", port)) as s:
            s.sendall(b"GET /livez HTTP/1.1\r\nHost: x\r\nX-Pad: ")
            started = time.monotonic()
            try:
                for _ in range(64):  # 4 MiB of header, sent until the server gives up on it
                    s.sendall(b"a" * 65536)
            except (BrokenPipeError, ConnectionResetError):
                pass
            answer = _closed_within(s, 5)
            assert answer is not None, "the connection stayed open"
            assert answer == b"" or answer.startswith(b"HTTP/1.1 400"), answer[:100]
            assert time.monotonic() - started < 5
        assert httpx.get(url).status_code == 200


def test_an_unfinished_request_is_dropped_after_the_read_timeout(tmp_path):
    with live_server(tmp_path, request_read_timeout_s=0.5) as port:
        with socket.create_connection(("127.0.0.1", port)) as half_line:
            half_line.sendall(b"GET /liv")
            assert _closed_within(half_line, 3) is not None
        with socket.create_connection(("127.0.0.1", port)) as silent:
            assert _closed_within(silent, 3) is not None
        with socket.create_connection(("127.0.0.1", port)) as slow_body:
            slow_body.sendall(b"POST /classes HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n")
            slow_body.sendall(b'Content-Length: 1000\r\n\r\n{"names": [')
            started = time.monotonic()
            try:
                for _ in range(30):  # trickling bytes does not extend the deadline
                    time.sleep(0.1)
                    slow_body.sendall(b" ")
            except (BrokenPipeError, ConnectionResetError):
                pass
            assert _closed_within(slow_body, 3) is not None
            assert time.monotonic() - started < 2.5


def test_a_complete_request_is_answered_and_kept_alive_until_idle(tmp_path):
    with live_server(tmp_path, request_read_timeout_s=0.5, keep_alive_timeout_s=1) as port:
        with socket.create_connection(("127.0.0.1", port)) as s:
            s.sendall(b"GET /livez HTTP/1.1\r\nHost: x\r\n\r\n")
            s.settimeout(2)
            assert s.recv(4096).startswith(b"HTTP/1.1 200")
            time.sleep(0.7)  # past the read timeout, within keep-alive: the request was complete, so still open
            s.sendall(b"GET /livez HTTP/1.1\r\nHost: x\r\n\r\n")
            assert s.recv(4096).startswith(b"HTTP/1.1 200")
            s.sendall(b"GET /li")  # a second request that never finishes
            assert _closed_within(s, 3) is not None
