"""The class registry: POST /classes, GET /classes, DELETE /classes/{name}."""

from __future__ import annotations

from fastapi import APIRouter

from app.api.deps import Authorized, ServiceDep
from app.api.schemas import AddedOut, ClassesOut, ErrorOut, NamesIn, RemovedOut

router = APIRouter(prefix="/classes", tags=["classes"])

_ERRORS = {code: {"model": ErrorOut} for code in (401, 403, 409, 422, 503)}


@router.get("", response_model=ClassesOut, responses={503: {"model": ErrorOut}})
async def list_classes(service: ServiceDep) -> dict:
    return {"classes": service.list_classes()}


@router.post("", response_model=AddedOut, responses=_ERRORS, dependencies=[Authorized])
async def add_classes(body: NamesIn, service: ServiceDep) -> dict:
    """Register classes zero-shot (text features for the new names only); repeating a call changes nothing."""
    return await service.add_classes(body.names)


@router.delete(
    "/{name}", response_model=RemovedOut, responses={404: {"model": ErrorOut}, **_ERRORS}, dependencies=[Authorized]
)
async def remove_class(name: str, service: ServiceDep) -> dict:
    return await service.remove_class(name)
