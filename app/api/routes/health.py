"""GET /livez (the process answers), GET /readyz (the model is loaded and warmed up)."""

from __future__ import annotations

from fastapi import APIRouter

from app.api.deps import ServiceDep
from app.api.schemas import ErrorOut, ReadyOut

router = APIRouter(tags=["health"])


@router.get("/livez")
async def livez() -> dict:
    return {"status": "alive"}


@router.get("/readyz", response_model=ReadyOut, responses={503: {"model": ErrorOut}})
async def readyz(service: ServiceDep) -> dict:
    """200 once loaded and warmed up; 503 while loading, or naming the cause when start-up failed."""
    return {
        "status": "ready",
        "model": service.model_info(),
        "classes": len(service.list_classes()),
        "models": len(service.model_names()),
    }
