"""Run the app under uvicorn with bounds on what one client can make the server hold.

uvicorn's h11 protocol is used (not httptools) because h11 bounds the request line + headers
(`max_header_bytes`: larger is a 400 and a closed connection, read no further); uvicorn offers
no such limit for httptools. uvicorn also has no timeout for a request that is being sent
(`timeout_keep_alive` only covers the idle time between requests, and any byte resets it), so
`RequestDeadlineProtocol` closes a connection whose request (headers and body) has not fully
arrived `request_read_timeout_s` after its first byte.
"""

from __future__ import annotations

import asyncio
import logging
import socket

import h11
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from app.config import Settings

log = logging.getLogger(__name__)

# Client states in which the request has fully arrived (or the connection is over): no deadline.
_RECEIVED = (h11.DONE, h11.MUST_CLOSE, h11.CLOSED, h11.ERROR, h11.SWITCHED_PROTOCOL)


class RequestDeadlineProtocol(H11Protocol):
    """uvicorn's h11 protocol plus a deadline for receiving each request; subclass it to set the time."""

    read_timeout_s: float = 30.0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self._deadline: asyncio.TimerHandle | None = None
        super().connection_made(transport)
        self._arm()  # a client that connects and sends nothing is dropped too

    def data_received(self, data: bytes) -> None:
        if self._deadline is None and self.conn.their_state not in _RECEIVED:
            self._arm()  # the first bytes of a request on a kept-alive connection
        super().data_received(data)
        self._disarm_if_received()

    def on_response_complete(self) -> None:
        super().on_response_complete()  # may start a pipelined request already buffered
        if self.conn.their_state in _RECEIVED:
            self._disarm_if_received()
        elif self._deadline is None and self.conn.trailing_data[0]:
            self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel()
        super().connection_lost(exc)

    def _arm(self) -> None:
        self._cancel()
        self._deadline = self.loop.call_later(self.read_timeout_s, self._expire)

    def _cancel(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _disarm_if_received(self) -> None:
        if self.conn.their_state in _RECEIVED:
            self._cancel()

    def _expire(self) -> None:
        self._deadline = None
        if self.conn.their_state in _RECEIVED or self.transport.is_closing():
            return
        log.info("closing a connection: its request did not arrive within %g s", self.read_timeout_s)
        self.transport.close()


def protocol_class(settings: Settings) -> type[RequestDeadlineProtocol]:
    return type("BoundedH11Protocol", (RequestDeadlineProtocol,), {"read_timeout_s": settings.request_read_timeout_s})


def uvicorn_config(app, settings: Settings) -> uvicorn.Config:
    """The one place that turns settings into uvicorn's options (tests start servers through it too)."""
    return uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        http=protocol_class(settings),
        h11_max_incomplete_event_size=settings.max_header_bytes,
        timeout_keep_alive=settings.keep_alive_timeout_s,
        log_level=settings.log_level,
        access_log=False,
    )


def bind(config: uvicorn.Config) -> tuple[socket.socket, int]:
    """Bind before serving, so the log can say the real port (--port 0 picks a free one)."""
    sock = config.bind_socket()
    return sock, sock.getsockname()[1]
