"""What the service refuses, and what it says about failures: the exceptions app/api/errors.py maps to
HTTP answers. Their messages are written here or by the service (safe to show a client); library text
stays in the log.
"""

from __future__ import annotations

from collections.abc import Sequence

from app.engine.errors import EngineError
from app.models import ModelLoadError
from app.names import show
from app.registry import RegistryError


class NotReadyError(Exception):
    """The model is loading (or failed to load); requests that need it wait for /readyz."""


class RegistryWaitError(NotReadyError):
    """Start-up waits for the class registry (the database is not reachable yet); the message says why."""


class PrepareFailedError(NotReadyError):
    """Start-up failed for good; the message names the cause (our own text: registry or model errors)."""


class InvalidRequestError(Exception):
    """A request the service refuses with a message written here (safe to show the client)."""


class ClassNotFoundError(InvalidRequestError):
    def __init__(self, name: str, model: str) -> None:
        super().__init__(f"class {show(name)} is not registered for model {model} (GET /models/{model}/classes)")


class ModelNotFoundError(InvalidRequestError):
    """A request named a model this server does not serve (404, listing the served ones)."""

    def __init__(self, name: str, served: Sequence[str]) -> None:
        super().__init__(f"model {show(name)} is not served; served models: {', '.join(served)} (GET /models)")


class ReloadFailedError(InvalidRequestError):
    """A reload could not load the new artifact; the old version keeps serving."""


def cause(exc: Exception) -> str:
    """What a client or /readyz is told about a failure: our own registry, model and engine messages in
    full; for anything else only its type (library exception text stays in the log)."""
    if isinstance(exc, RegistryError | EngineError | ModelLoadError):
        return str(exc)
    return type(exc).__name__
