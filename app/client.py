"""A Python client for the vpt HTTP API: `Client` (blocking) and `AsyncClient` (asyncio), same methods.

    from app.client import Client

    with Client("http://127.0.0.1:8000", token="...") as vpt:
        answer = vpt.classify("heart.png", top_k=3)
        if not answer.unknown:
            print(answer.top.label, answer.prediction_set)

Why it is shaped this way: every endpoint is written once, as a function that returns a `Call` (the
request to send plus how to read its answer); the two clients differ only in how they send it. Answers
become frozen dataclasses that keep the fields this client knows and ignore the others, so a newer
server with more fields still works, and an older one without `name`/`version`/`registry_version`
gives None there.

Errors: an HTTP error answer raises `VPTError` (or a subclass: `NotFound`, `Unauthorized`,
`InvalidRequest`, `Unavailable`) whose message is the server's `detail`. A server that cannot be
reached (connection refused or reset, timeout) raises `Unavailable` with `status` None and the httpx
error as its `__cause__`: for a caller both mean "not now, try again later", and one `except` covers
them. `ready()` and `live()` never raise for a server that is down: they answer False.
"""

from __future__ import annotations

import io
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, fields
from datetime import datetime
from pathlib import Path
from typing import IO, Any, Generic, Literal, TypeVar
from urllib.parse import quote

import httpx
from PIL import Image

__all__ = [
    "AsyncClient",
    "Calibration",
    "ClassScore",
    "Classification",
    "ClassesResult",
    "Client",
    "InvalidRequest",
    "ModelInfo",
    "ModelRef",
    "Models",
    "NotFound",
    "Reloaded",
    "Unauthorized",
    "Unavailable",
    "VPTError",
]

DEFAULT_TIMEOUT_S = 60.0  # above the server's own request timeout, so a slow answer is its 503, not ours

ImageInput = bytes | bytearray | memoryview | str | os.PathLike | Image.Image | IO[bytes]
Samples = int | Literal["auto"] | None
T = TypeVar("T")


# --- errors -------------------------------------------------------------------------------------


class VPTError(Exception):
    """The server refused or failed a request. `status` is the HTTP status (None: no answer came);
    str(error) is the server's `detail` message."""

    def __init__(self, status: int | None, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail

    def __repr__(self) -> str:
        return f"{type(self).__name__}(status={self.status!r}, detail={self.detail!r})"


class InvalidRequest(VPTError):
    """4xx other than 401/403/404: fix the request (bad image, bad parameter, class limit, no classes)."""


class NotFound(VPTError):
    """404: no such model, or no such class."""


class Unauthorized(VPTError):
    """401 (no token) or 403 (wrong token) on a mutating call."""


class Unavailable(VPTError):
    """Try again later: 503 (loading, busy, registry unreachable), a gateway's 502/504, or the server could
    not be reached (status None). `retry_after` is the server's Retry-After in seconds, when it sent one."""

    def __init__(self, status: int | None, detail: str, retry_after: float | None = None) -> None:
        super().__init__(status, detail)
        self.retry_after = retry_after


def error_from_response(response: httpx.Response) -> VPTError:
    """The exception for an error answer; its message is the JSON `detail`, else the body's start."""
    status = response.status_code
    try:
        detail = response.json()["detail"]
        if not isinstance(detail, str):
            raise TypeError
    except (ValueError, KeyError, TypeError):
        detail = response.text.strip()[:500] or response.reason_phrase or f"HTTP {status}"
    if status in (502, 503, 504):
        return Unavailable(status, detail, _seconds(response.headers.get("Retry-After")))
    if status in (401, 403):
        return Unauthorized(status, detail)
    if status == 404:
        return NotFound(status, detail)
    if 400 <= status < 500:
        return InvalidRequest(status, detail)
    return VPTError(status, detail)


def _seconds(value: str | None) -> float | None:
    try:
        return float(value) if value is not None else None
    except ValueError:  # the HTTP-date form: not worth parsing for a hint
        return None


# --- results ------------------------------------------------------------------------------------


def _known(cls: type, data: dict[str, Any], **converted: Any) -> dict[str, Any]:
    """The fields of dataclass `cls` found in `data` (extra keys from a newer server are dropped)."""
    names = {f.name for f in fields(cls)}
    return {**{k: v for k, v in data.items() if k in names}, **converted}


def _when(value: str | None) -> datetime | None:
    """ISO 8601 -> datetime; 'Z' spelled out because Python 3.10's fromisoformat does not read it."""
    if value is None:
        return None
    return datetime.fromisoformat(value[:-1] + "+00:00" if value.endswith("Z") else value)


@dataclass(frozen=True)
class ClassScore:
    label: str
    probability: float  # Monte Carlo mean of p(class | image)
    variance: float  # over the sampled prompts
    std: float

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ClassScore:
        return cls(**_known(cls, data))


@dataclass(frozen=True)
class Calibration:
    temperature: float
    method: str
    held_out_images: int
    classes: int
    matches_registered_classes: bool
    false_alarm: float

    @classmethod
    def from_json(cls, data: dict[str, Any] | None) -> Calibration | None:
        return None if data is None else cls(**_known(cls, data))


@dataclass(frozen=True)
class ModelRef:
    """Which model answered. `name` and `version` (artifact digest prefix) are None from servers older
    than the multi-model API."""

    variant: str
    id: str
    max_samples: int
    unknown_measure: str
    unknown_threshold: float
    calibration: Calibration | None = None
    text_pass: str = "exact"
    linear_error: float | None = None
    name: str | None = None
    version: str | None = None

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ModelRef:
        return cls(**_known(cls, data, calibration=Calibration.from_json(data.get("calibration"))))


@dataclass(frozen=True)
class Classification:
    """One answer of POST /classify. Read `unknown` first (is it any registered class at all?), then
    `prediction_set` (the classes that hold the true one with probability >= coverage, when calibrated)."""

    classes: tuple[ClassScore, ...]  # most probable first
    entropy: float
    expected_entropy: float
    mutual_information: float
    energy: float
    prediction_set: tuple[str, ...]
    coverage: float
    calibrated: bool
    unknown: bool
    unknown_score: float
    unknown_measure: str
    samples: int
    model: ModelRef
    registry_version: int | None = None

    @property
    def top(self) -> ClassScore:
        """The most probable class (the server always answers at least one)."""
        return self.classes[0]

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Classification:
        return cls(
            **_known(
                cls,
                data,
                classes=tuple(ClassScore.from_json(c) for c in data["classes"]),
                prediction_set=tuple(data["prediction_set"]),
                model=ModelRef.from_json(data["model"]),
            )
        )


@dataclass(frozen=True)
class ClassesResult:
    """The registered classes (in registration order) after a GET, POST or DELETE of classes."""

    classes: tuple[str, ...]
    added: tuple[str, ...] = ()  # POST: the names that were new
    removed: str | None = None  # DELETE: the name removed, as it was registered

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ClassesResult:
        return cls(**_known(cls, data, classes=tuple(data["classes"]), added=tuple(data.get("added", ()))))


@dataclass(frozen=True)
class ModelInfo:
    """One served model (GET /models/{name})."""

    name: str
    version: str
    variant: str
    classes: int  # registered now
    trained_classes: int
    calibrated: bool  # calibration present and made for exactly the registered classes
    state: str
    sha256: str | None = None
    path: str | None = None
    created_at: datetime | None = None
    loaded_at: datetime | None = None
    calibration: Calibration | None = None
    error: str | None = None  # the last failed reload's message (the previous version keeps serving)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ModelInfo:
        return cls(
            **_known(
                cls,
                data,
                created_at=_when(data.get("created_at")),
                loaded_at=_when(data.get("loaded_at")),
                calibration=Calibration.from_json(data.get("calibration")),
            )
        )


@dataclass(frozen=True)
class Models:
    """GET /models: the default model's name and every served model, sorted by name."""

    default: str
    models: tuple[ModelInfo, ...]

    @property
    def names(self) -> list[str]:
        return [m.name for m in self.models]

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Models:
        return cls(default=data["default"], models=tuple(ModelInfo.from_json(m) for m in data["models"]))


@dataclass(frozen=True)
class Reloaded:
    """POST /models/{name}/reload: the version now serving and the one before."""

    name: str
    version: str
    previous_version: str | None
    changed: bool

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Reloaded:
        return cls(**_known(cls, data))


def _many(data: dict[str, Any]) -> dict[str, Classification]:
    """Several models' answers by model name; a single ClassifyOut (one model asked) is read too."""
    answers = (
        [Classification.from_json(a) for a in data["answers"]]
        if "answers" in data
        else [Classification.from_json(data)]
    )
    if any(a.model.name is None for a in answers):  # a server older than the multi-model API ignores `model`
        raise ValueError("the answer does not name its model: the server predates the multi-model API")
    return {a.model.name: a for a in answers}


# --- requests: each endpoint written once --------------------------------------------------------


@dataclass(frozen=True)
class Call(Generic[T]):
    """One request and how to read its answer; `Client` and `AsyncClient` only send it.
    A probe (health check) answers True on 200 and False otherwise, never raising."""

    method: str
    path: str
    read: Callable[[httpx.Response], T]
    params: tuple[tuple[str, str], ...] = ()
    json: Any = None
    files: dict[str, tuple[str, bytes, str]] | None = None
    probe: bool = False


def _json(parse: Callable[[dict[str, Any]], T]) -> Callable[[httpx.Response], T]:
    return lambda response: parse(response.json())


def _upload(image: ImageInput) -> tuple[str, bytes, str]:
    """(filename, bytes, content type) of the multipart field `file`; a PIL image is sent as PNG.
    The server reads the format from the bytes, so the type is only a hint."""
    if isinstance(image, Image.Image):
        buf = io.BytesIO()
        image.save(buf, format="PNG")
        return "image.png", buf.getvalue(), "image/png"
    if isinstance(image, (bytes, bytearray, memoryview)):
        return "image", bytes(image), "application/octet-stream"
    if isinstance(image, (str, os.PathLike)):
        path = Path(image)
        return path.name, path.read_bytes(), "application/octet-stream"
    if hasattr(image, "read"):
        return Path(str(getattr(image, "name", "image"))).name, image.read(), "application/octet-stream"
    raise TypeError(f"image must be bytes, a path, a PIL image or a binary file, not {type(image).__name__}")


def _classify_params(
    models: Sequence[str], top_k: int | None, samples: Samples, alpha: float | None
) -> tuple[tuple[str, str], ...]:
    values = [("model", m) for m in models]
    values += [(k, str(v)) for k, v in (("top_k", top_k), ("samples", samples), ("alpha", alpha)) if v is not None]
    return tuple(values)


def _classes_path(model: str | None) -> str:
    """`/classes` is the default model's; a named model's live under /models/{name}/classes."""
    return "/classes" if model is None else f"{_model_path(model)}/classes"


def _model_path(name: str) -> str:
    return "/models/" + quote(name, safe="")


def _classify_call(
    image: ImageInput,
    *,
    model: str | None = None,
    top_k: int | None = None,
    samples: Samples = None,
    alpha: float | None = None,
) -> Call[Classification]:
    params = _classify_params([model] if model is not None else [], top_k, samples, alpha)
    return Call("POST", "/classify", _json(Classification.from_json), params, files={"file": _upload(image)})


def _classify_many_call(
    image: ImageInput,
    models: Iterable[str],
    *,
    top_k: int | None = None,
    samples: Samples = None,
    alpha: float | None = None,
) -> Call[dict[str, Classification]]:
    names = list(models)
    if not names:
        raise ValueError("models is empty: name at least one model")
    params = _classify_params(names, top_k, samples, alpha)
    return Call("POST", "/classify", _json(_many), params, files={"file": _upload(image)})


def _classes_call(model: str | None = None) -> Call[ClassesResult]:
    return Call("GET", _classes_path(model), _json(ClassesResult.from_json))


def _add_classes_call(names: Iterable[str], model: str | None = None) -> Call[ClassesResult]:
    if isinstance(names, str):
        raise TypeError("names must be a list of class names, not one string")
    return Call("POST", _classes_path(model), _json(ClassesResult.from_json), json={"names": list(names)})


def _remove_class_call(name: str, model: str | None = None) -> Call[ClassesResult]:
    # the query form: every name works, '/' and '?' included
    return Call("DELETE", _classes_path(model), _json(ClassesResult.from_json), (("name", name),))


def _models_call() -> Call[Models]:
    return Call("GET", "/models", _json(Models.from_json))


def _model_call(name: str) -> Call[ModelInfo]:
    return Call("GET", _model_path(name), _json(ModelInfo.from_json))


def _reload_call(name: str) -> Call[Reloaded]:
    return Call("POST", _model_path(name) + "/reload", _json(Reloaded.from_json))


def _ready_call() -> Call[bool]:
    return Call("GET", "/readyz", lambda r: r.status_code == 200, probe=True)


def _live_call() -> Call[bool]:
    return Call("GET", "/livez", lambda r: r.status_code == 200, probe=True)


def _metrics_call() -> Call[str]:
    return Call("GET", "/metrics", lambda r: r.text)


def _options(base_url: str, token: str | None, timeout: float | httpx.Timeout) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return {"base_url": base_url.rstrip("/"), "headers": headers, "timeout": timeout}


def _request(http: httpx.Client | httpx.AsyncClient, call: Call[Any]) -> httpx.Request:
    return http.build_request(call.method, call.path, params=call.params, json=call.json, files=call.files)


def _finish(call: Call[T], outcome: httpx.Response | httpx.TransportError) -> T:
    """The answer of `call`, or the exception it means (see the module docstring)."""
    if isinstance(outcome, httpx.TransportError):
        if call.probe:
            return False  # type: ignore[return-value]  # a probe's T is bool
        raise Unavailable(None, f"cannot reach the server ({type(outcome).__name__}: {outcome})") from outcome
    if call.probe:
        return call.read(outcome)
    if outcome.is_error:
        raise error_from_response(outcome)
    try:
        return call.read(outcome)
    except (ValueError, KeyError, TypeError) as exc:
        raise VPTError(outcome.status_code, f"the server's answer is not what this client reads: {exc!r}") from exc


# --- the two clients ------------------------------------------------------------------------------


class Client:
    """Blocking client; use it as a context manager (or call close()) to release its connections."""

    def __init__(
        self,
        base_url: str = "http://127.0.0.1:8000",
        *,
        token: str | None = None,
        timeout: float | httpx.Timeout = DEFAULT_TIMEOUT_S,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self._http = httpx.Client(transport=transport, **_options(base_url, token, timeout))

    def _send(self, call: Call[T]) -> T:
        try:
            response = self._http.send(_request(self._http, call))
        except httpx.TransportError as exc:
            return _finish(call, exc)
        return _finish(call, response)

    def classify(
        self,
        image: ImageInput,
        *,
        model: str | None = None,
        top_k: int | None = None,
        samples: Samples = None,
        alpha: float | None = None,
    ) -> Classification:
        return self._send(_classify_call(image, model=model, top_k=top_k, samples=samples, alpha=alpha))

    def classify_many(
        self,
        image: ImageInput,
        models: Iterable[str],
        *,
        top_k: int | None = None,
        samples: Samples = None,
        alpha: float | None = None,
    ) -> dict[str, Classification]:
        return self._send(_classify_many_call(image, models, top_k=top_k, samples=samples, alpha=alpha))

    def classes(self, model: str | None = None) -> ClassesResult:
        return self._send(_classes_call(model))

    def add_classes(self, names: Iterable[str], model: str | None = None) -> ClassesResult:
        return self._send(_add_classes_call(names, model))

    def remove_class(self, name: str, model: str | None = None) -> ClassesResult:
        return self._send(_remove_class_call(name, model))

    def models(self) -> Models:
        return self._send(_models_call())

    def model(self, name: str) -> ModelInfo:
        return self._send(_model_call(name))

    def reload(self, name: str) -> Reloaded:
        return self._send(_reload_call(name))

    def ready(self) -> bool:
        return self._send(_ready_call())

    def live(self) -> bool:
        return self._send(_live_call())

    def metrics(self) -> str:
        return self._send(_metrics_call())

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class AsyncClient:
    """The same methods as `Client`, awaited; use `async with` (or await aclose())."""

    def __init__(
        self,
        base_url: str = "http://127.0.0.1:8000",
        *,
        token: str | None = None,
        timeout: float | httpx.Timeout = DEFAULT_TIMEOUT_S,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._http = httpx.AsyncClient(transport=transport, **_options(base_url, token, timeout))

    async def _send(self, call: Call[T]) -> T:
        try:
            response = await self._http.send(_request(self._http, call))
        except httpx.TransportError as exc:
            return _finish(call, exc)
        return _finish(call, response)

    async def classify(
        self,
        image: ImageInput,
        *,
        model: str | None = None,
        top_k: int | None = None,
        samples: Samples = None,
        alpha: float | None = None,
    ) -> Classification:
        return await self._send(_classify_call(image, model=model, top_k=top_k, samples=samples, alpha=alpha))

    async def classify_many(
        self,
        image: ImageInput,
        models: Iterable[str],
        *,
        top_k: int | None = None,
        samples: Samples = None,
        alpha: float | None = None,
    ) -> dict[str, Classification]:
        return await self._send(_classify_many_call(image, models, top_k=top_k, samples=samples, alpha=alpha))

    async def classes(self, model: str | None = None) -> ClassesResult:
        return await self._send(_classes_call(model))

    async def add_classes(self, names: Iterable[str], model: str | None = None) -> ClassesResult:
        return await self._send(_add_classes_call(names, model))

    async def remove_class(self, name: str, model: str | None = None) -> ClassesResult:
        return await self._send(_remove_class_call(name, model))

    async def models(self) -> Models:
        return await self._send(_models_call())

    async def model(self, name: str) -> ModelInfo:
        return await self._send(_model_call(name))

    async def reload(self, name: str) -> Reloaded:
        return await self._send(_reload_call(name))

    async def ready(self) -> bool:
        return await self._send(_ready_call())

    async def live(self) -> bool:
        return await self._send(_live_call())

    async def metrics(self) -> str:
        return await self._send(_metrics_call())

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()
