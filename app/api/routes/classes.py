"""The class registry: POST /classes, GET /classes, DELETE /classes?name=... (or /classes/{name})."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from app.api.deps import Authorized, ServiceDep, TokenFirstRoute
from app.api.schemas import AddedOut, ClassesOut, ErrorOut, NamesIn, RemovedOut

router = APIRouter(prefix="/classes", tags=["classes"], route_class=TokenFirstRoute)

_ERRORS = {code: {"model": ErrorOut} for code in (400, 401, 403, 409, 422, 503)}


@router.get("", response_model=ClassesOut, responses={503: {"model": ErrorOut}})
async def list_classes(service: ServiceDep) -> dict:
    return {"classes": service.list_classes()}


@router.post("", response_model=AddedOut, responses=_ERRORS, dependencies=[Authorized])
async def add_classes(body: NamesIn, service: ServiceDep) -> dict:
    """Register classes zero-shot (text features for the new names only); repeating a call changes nothing."""
    return await service.add_classes(body.names)


_REMOVE = {
    "response_model": RemovedOut,
    "responses": {404: {"model": ErrorOut}, **_ERRORS},
    "dependencies": [Authorized],
}


@router.delete("", **_REMOVE)
async def remove_class(
    name: Annotated[str, Query(min_length=1, description="the class to remove (any name that POST /classes takes)")],
    service: ServiceDep,
) -> dict:
    """Remove a class; the query form works for every name, '/' and '?' included."""
    return await service.remove_class(name)


@router.delete("/{name:path}", **_REMOVE)
async def remove_class_by_path(name: str, service: ServiceDep) -> dict:
    """The path form, for simple names (DELETE /classes?name=... takes any name)."""
    return await service.remove_class(name)
