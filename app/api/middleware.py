"""Pure ASGI middleware (no BaseHTTPMiddleware): request metrics, a body-size bound, HEAD / OPTIONS /
Allow, and the nosniff header."""

from __future__ import annotations

import logging
import time
import uuid
from typing import Any

from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.metrics import Metrics

access_log = logging.getLogger("vpt.access")


class RequestMetrics:
    """Count and time every HTTP request by route template (not raw path) and status, and log one
    structured line per request (method, path, status, latency, request id). The id is the
    client's X-Request-ID when it sends a short one, else a new one, and is echoed in the answer."""

    MAX_CACHED = 1024  # label sets whose children are kept (methods and statuses are client-chosen)

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics
        self._children: dict[tuple[str, str, str], tuple[Any, Any]] = {}  # labels -> (counter, histogram)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500
        given = dict(scope.get("headers", ())).get(b"x-request-id", b"")
        request_id = given.decode("latin-1") if 0 < len(given) <= 64 and given.isascii() else uuid.uuid4().hex

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", []), (b"x-request-id", request_id.encode("latin-1"))]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            route = scope.get("route")
            path = getattr(route, "path", None) or "unmatched"
            labels = (path, scope["method"], str(status))
            children = self._children.get(labels)
            if children is None:  # labels() takes a lock and builds a key: once per label set, not per request
                children = (self.metrics.requests.labels(*labels), self.metrics.latency.labels(*labels))
                if len(self._children) < self.MAX_CACHED:
                    self._children[labels] = children
            elapsed = time.perf_counter() - started
            children[0].inc()
            children[1].observe(elapsed)
            if access_log.isEnabledFor(logging.INFO):
                access_log.info(
                    "%s %s %d %.1fms id=%s",
                    scope["method"],
                    scope.get("path", ""),
                    status,
                    1000 * elapsed,
                    request_id,
                    extra={
                        "method": scope["method"],
                        "path": scope.get("path", ""),
                        "status": status,
                        "latency_ms": 1000 * elapsed,
                        "request_id": request_id,
                    },
                )


class BodySizeLimit:
    """413 for bodies over `max_bytes`: from Content-Length before reading, else while streaming."""

    def __init__(self, app: ASGIApp, max_bytes: int, detail: str) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.detail = detail

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers", ())).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            response = JSONResponse({"detail": self.detail}, status_code=413, headers={"Connection": "close"})
            await response(scope, receive, send)
            return
        received = 0

        async def bounded_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise HTTPException(413, self.detail)  # FastAPI re-raises it from body parsing
            return message

        await self.app(scope, bounded_receive, send)


class MethodsMiddleware:
    """HEAD answered wherever GET is (headers only), OPTIONS answered with the methods the path
    takes, and a 405's Allow header listing all of them (Starlette names only the first route's)."""

    def __init__(self, app: ASGIApp, routes: list) -> None:
        self.app = app
        self.routes = routes  # every route with methods, flat (not the included routers)

    def allowed(self, scope: Scope) -> list[str]:
        methods: set[str] = set()
        for route in self.routes:
            if route.matches(scope)[0] != Match.NONE:
                methods |= set(route.methods)
        if not methods:
            return []
        if "GET" in methods:
            methods.add("HEAD")
        return sorted(methods | {"OPTIONS"})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        method = scope["method"]
        if method == "OPTIONS":
            allowed = self.allowed(scope)
            if allowed:
                await Response(status_code=204, headers={"Allow": ", ".join(allowed)})(scope, receive, send)
                return
        if method == "HEAD":
            scope = {**scope, "method": "GET"}

        async def send_fixed(message: Message) -> None:
            if message["type"] == "http.response.start" and message["status"] == 405:
                allowed = ", ".join(self.allowed(scope)).encode()
                headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != b"allow"]
                message = {**message, "headers": [*headers, (b"allow", allowed)]}
            elif message["type"] == "http.response.body" and method == "HEAD":
                message = {**message, "body": b""}
            await send(message)

        await self.app(scope, receive, send_fixed)


class SecurityHeaders:
    """`X-Content-Type-Options: nosniff` on every answer that does not set it (JSON must never be sniffed as HTML)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                if not any(k.lower() == b"x-content-type-options" for k, _ in headers):
                    headers.append((b"x-content-type-options", b"nosniff"))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)
