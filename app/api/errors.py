"""The one place that turns exceptions into HTTP answers.

Every answer is `{"detail": "<what went wrong and what to do>"}` with a fixed message per
error type; exception text and tracebacks go to the log only. Messages that embed client
input (InvalidRequestError) are composed by the service, never by a library.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from app.batcher import BatcherClosedError, QueueFullError, RequestTimeoutError
from app.config import Settings
from app.engine.errors import EngineError, InvalidClassNameError, InvalidSamplesError, NoClassesError
from app.images import CorruptImageError, EmptyImageError, ImageShapeError, ImageTooLargeError, NotAnImageError
from app.refusals import (
    ClassNotFoundError,
    InvalidRequestError,
    ModelNotFoundError,
    NotReadyError,
    PrepareFailedError,
    RegistryWaitError,
)
from app.registry import RegistryError, RegistryLimitError, RegistryUnavailableError

log = logging.getLogger(__name__)

RETRY_AFTER_S = "1"
REGISTRY_RETRY_AFTER_S = "5"  # a database that is down is rarely back within a second
_READABLE = "JPEG, PNG, WebP, GIF, BMP or TIFF"

# type -> (status, message, retry); the first match along the exception's MRO wins.
ERRORS: dict[type[BaseException], tuple[int, str, bool]] = {
    EmptyImageError: (400, "the uploaded file is empty: send the image bytes in the multipart field 'file'", False),
    NotAnImageError: (415, f"the upload is not an image this service reads: send {_READABLE}", False),
    CorruptImageError: (400, "the image is corrupt or truncated and cannot be decoded: check the file", False),
    ImageTooLargeError: (
        413,
        "the image is too large: at most {max_image_bytes} bytes and {max_image_pixels} pixels; downscale it",
        False,
    ),
    ImageShapeError: (
        422,
        "the image is too elongated: its long side may be at most {max_image_aspect_ratio} times its short side; "
        "crop it",
        False,
    ),
    NoClassesError: (
        409,
        "the model has no classes registered: POST /classes (a named model: /models/<name>/classes) with "
        '{{"names": [...]}} first',
        False,
    ),
    InvalidClassNameError: (
        422,
        "a class name is invalid: it must be non-empty visible text that fits the model's text context",
        False,
    ),
    InvalidSamplesError: (422, "samples is out of range: give 1..max_samples (GET /readyz states max_samples)", False),
    NotReadyError: (503, "the model is not ready yet (loading or failed): retry when GET /readyz answers 200", True),
    BatcherClosedError: (503, "the server is starting or shutting down: retry shortly", True),
    QueueFullError: (503, "the server is busy (request queue full): retry shortly", True),
    RequestTimeoutError: (503, "the request waited too long for the model: retry shortly", True),
    RegistryUnavailableError: (
        503,
        "the class registry (database) is unreachable, so classes cannot change now; classification goes on "
        "with the classes known: retry the same call later (it is idempotent)",
        True,
    ),
    RegistryError: (500, "the class registry could not be read or written; the server log has details", False),
    EngineError: (500, "the model failed on this request; the server log has details", False),
}
INTERNAL = (500, "internal error; the server log has details", False)


def _lookup(exc: BaseException) -> tuple[int, str, bool]:
    for cls in type(exc).__mro__:
        if cls in ERRORS:
            return ERRORS[cls]
    return INTERNAL


def error_response(
    status: int, detail: str, retry: bool = False, headers: dict[str, str] | None = None
) -> JSONResponse:
    headers = dict(headers or {})
    if retry:
        headers["Retry-After"] = RETRY_AFTER_S
    if status >= 500 and status != 503:
        headers["Connection"] = "close"  # the server drops the connection after an error: say so (pipelining)
    return JSONResponse({"detail": detail}, status_code=status, headers=headers or None)


# Refusals whose message the service composed for the client: type -> status.
REQUEST_ERRORS: dict[type[InvalidRequestError], int] = {
    ClassNotFoundError: 404,
    ModelNotFoundError: 404,
}


async def handle_domain_error(request: Request, exc: Exception) -> JSONResponse:
    if isinstance(exc, InvalidRequestError):
        return error_response(REQUEST_ERRORS.get(type(exc), 422), str(exc))
    if isinstance(exc, PrepareFailedError):  # the cause is the service's own text (see app.refusals.cause)
        return error_response(503, f"the service failed to start and will not become ready: {exc}; fix it and restart")
    if isinstance(exc, RegistryWaitError):  # the registry's own message
        detail = f"waiting for the class registry at start-up ({exc}); the service retries by itself"
        return error_response(503, detail, headers={"Retry-After": REGISTRY_RETRY_AFTER_S})
    if isinstance(exc, RegistryLimitError):  # the registry's own message, checked inside its transaction
        return error_response(409, str(exc))
    status, message, retry = _lookup(exc)
    if isinstance(exc, RegistryUnavailableError):
        log.info("%s %s -> 503 (%s)", request.method, request.url.path, exc)
        return error_response(status, message, headers={"Retry-After": REGISTRY_RETRY_AFTER_S})
    settings: Settings = request.app.state.settings
    message = message.format(
        max_image_bytes=settings.max_image_bytes,
        max_image_pixels=settings.max_image_pixels,
        max_image_aspect_ratio=f"{settings.max_image_aspect_ratio:g}",
    )
    if status >= 500 and status != 503:
        log.error("%s %s failed", request.method, request.url.path, exc_info=exc)
    else:
        log.info("%s %s -> %d (%s)", request.method, request.url.path, status, type(exc).__name__)
    return error_response(status, message, retry)


async def handle_http_error(request: Request, exc: HTTPException) -> JSONResponse:
    detail = exc.detail if isinstance(exc.detail, str) else "invalid request"
    return error_response(exc.status_code, detail, headers=exc.headers)


def _where(loc: tuple) -> str:
    parts = [str(p) for p in loc]
    if parts and parts[0] in ("body", "query", "path", "header"):
        kind, rest = parts[0], parts[1:]
        if kind == "body" and rest:
            return f"field '{'.'.join(rest)}'"
        return f"{kind} parameter '{'.'.join(rest)}'" if rest else f"request {kind}"
    return "'" + ".".join(parts) + "'"


async def handle_validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    problems = []
    for err in exc.errors()[:5]:
        where = _where(tuple(err.get("loc", ())))
        if err.get("type") == "missing":
            problems.append(f"{where} is required")
        elif err.get("type") == "json_invalid":
            problems.append("the request body is not valid JSON (UTF-8)")
        else:
            problems.append(f"{where}: {err.get('msg', 'invalid').removeprefix('Value error, ')}")
    hint = ""
    if request.url.path == "/classify":
        hint = " (send the image as multipart/form-data field 'file'; query: top_k, samples, alpha, model)"
    elif request.url.path.startswith("/classes") or request.url.path.endswith("/classes"):
        hint = ' (send JSON {"names": ["a class", ...]})'
    return error_response(422, "; ".join(problems) + hint)


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(RequestValidationError, handle_validation_error)
    app.add_exception_handler(HTTPException, handle_http_error)
    for cls in (*ERRORS, InvalidRequestError, PrepareFailedError, Exception):
        app.add_exception_handler(cls, handle_domain_error)
