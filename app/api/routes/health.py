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
    """200 once loaded and warmed up; 503 while loading, or naming the cause when start-up failed. While the
    class registry is unreachable: 200 "degraded" with the reason (it still classifies, so a load balancer
    keeps it in rotation), classes cannot change and other replicas' changes arrive once it is back."""
    answer = {
        "status": "ready",
        "model": service.model_info(),
        "classes": len(service.list_classes()),
        "models": len(service.model_names()),
        "registry_version": service.registry_version,
    }
    reason = service.registry_reason()
    if reason is not None:
        answer |= {"status": "degraded", "reason": reason}
    return answer
