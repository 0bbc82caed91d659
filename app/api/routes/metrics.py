"""GET /metrics: Prometheus text from a plain route (a mounted ASGI app would redirect /metrics)."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from app.metrics import CONTENT_TYPE

router = APIRouter(tags=["metrics"])


@router.get("/metrics", include_in_schema=False)
async def metrics(request: Request) -> Response:
    service = request.app.state.service
    service.metrics.queue_depth.set(service.batcher.depth)
    return Response(service.metrics.render(), media_type=CONTENT_TYPE)
