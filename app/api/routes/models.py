"""The model repository: GET /models, GET /models/{model}, POST /models/{model}/reload."""

from __future__ import annotations

from fastapi import APIRouter

from app.api.deps import Authorized, ServiceDep, TokenFirstRoute
from app.api.routes.classes import ModelName
from app.api.schemas import ErrorOut, ModelInfoOut, ModelsOut, ReloadOut

router = APIRouter(prefix="/models", tags=["models"], route_class=TokenFirstRoute)


@router.get("", response_model=ModelsOut, responses={503: {"model": ErrorOut}})
async def list_models(service: ServiceDep) -> dict:
    """Every served model with its version, classes and calibration state, and the refused artifacts."""
    return service.catalogue()


@router.get("/{model}", response_model=ModelInfoOut, responses={404: {"model": ErrorOut}, 503: {"model": ErrorOut}})
async def get_model(model: ModelName, service: ServiceDep) -> dict:
    return service.describe(model)


@router.post(
    "/{model}/reload",
    response_model=ReloadOut,
    responses={code: {"model": ErrorOut} for code in (401, 403, 404, 422, 503)},
    dependencies=[Authorized],
)
async def reload_model(model: ModelName, service: ServiceDep) -> dict:
    """Load the model's artifact file anew and swap it in without downtime (requests in flight finish on
    the old version; registered classes are kept). A failed load answers 422 and the old version serves on."""
    return await service.reload(model)
