"""The class registry, per model: /models/{model}/classes, and /classes for the default model.

GET lists, POST {"names": [...]} registers zero-shot, DELETE ...?name=X (or .../classes/{name}) removes.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query

from app.api.deps import Authorized, ServiceDep, TokenFirstRoute
from app.api.schemas import AddedOut, ClassesOut, ErrorOut, NamesIn, RemovedOut

router = APIRouter(prefix="/classes", tags=["classes"], route_class=TokenFirstRoute)
model_router = APIRouter(prefix="/models/{model}/classes", tags=["classes"], route_class=TokenFirstRoute)

ModelName = Annotated[str, Path(description="a served model's name (GET /models)")]
ClassQuery = Annotated[str, Query(min_length=1, description="the class to remove (any name that POST takes)")]

_ERRORS = {code: {"model": ErrorOut} for code in (400, 401, 403, 404, 409, 422, 503)}
_LIST = {"response_model": ClassesOut, "responses": {404: {"model": ErrorOut}, 503: {"model": ErrorOut}}}
_ADD = {"response_model": AddedOut, "responses": _ERRORS, "dependencies": [Authorized]}
_REMOVE = {"response_model": RemovedOut, "responses": _ERRORS, "dependencies": [Authorized]}


@router.get("", **_LIST)
async def list_classes(service: ServiceDep) -> dict:
    """The default model's classes."""
    return {"classes": service.list_classes()}


@model_router.get("", **_LIST)
async def list_model_classes(model: ModelName, service: ServiceDep) -> dict:
    return {"classes": service.list_classes(model)}


@router.post("", **_ADD)
async def add_classes(body: NamesIn, service: ServiceDep) -> dict:
    """Register classes zero-shot (text features for the new names only); repeating a call changes nothing."""
    return await service.add_classes(body.names)


@model_router.post("", **_ADD)
async def add_model_classes(model: ModelName, body: NamesIn, service: ServiceDep) -> dict:
    """Register classes zero-shot for this model only (each model has its own class set)."""
    return await service.add_classes(body.names, model)


@router.delete("", **_REMOVE)
async def remove_class(name: ClassQuery, service: ServiceDep) -> dict:
    """Remove a class; the query form works for every name, '/' and '?' included."""
    return await service.remove_class(name)


@model_router.delete("", **_REMOVE)
async def remove_model_class(model: ModelName, name: ClassQuery, service: ServiceDep) -> dict:
    return await service.remove_class(name, model)


@router.delete("/{name:path}", **_REMOVE)
async def remove_class_by_path(name: str, service: ServiceDep) -> dict:
    """The path form, for simple names (DELETE /classes?name=... takes any name)."""
    return await service.remove_class(name)


@model_router.delete("/{name:path}", **_REMOVE)
async def remove_model_class_by_path(model: ModelName, name: str, service: ServiceDep) -> dict:
    return await service.remove_class(name, model)
