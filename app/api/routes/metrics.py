"""GET /metrics: Prometheus text from a plain route (a mounted ASGI app would redirect /metrics).

Gauges are kept current by their owners (the batcher writes the queue depth); this only renders."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from app.metrics import CONTENT_TYPE

router = APIRouter(tags=["metrics"])


@router.get("/metrics", include_in_schema=False)
async def metrics(request: Request) -> Response:
    return Response(request.app.state.service.metrics.render(), media_type=CONTENT_TYPE)
