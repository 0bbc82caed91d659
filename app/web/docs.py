"""GET /docs: Swagger UI served by this server (no CDN), so the API docs work offline.

The Swagger UI build comes from the fastapi-offline package (its static folder); the page and
its start-up script are ours, so a strict Content-Security-Policy holds: scripts and styles
from this server only (Swagger UI sets inline style attributes, hence 'unsafe-inline' for
styles), requests to this server only.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

import fastapi_offline
from fastapi import APIRouter, HTTPException
from fastapi.responses import FileResponse, HTMLResponse

router = APIRouter(tags=["ui"])

HERE = Path(__file__).parent
SWAGGER = Path(fastapi_offline.__file__).parent / "static"
ASSETS = {
    "swagger-ui-bundle.js": (SWAGGER, "text/javascript; charset=utf-8"),
    "swagger-ui.css": (SWAGGER, "text/css; charset=utf-8"),
    "favicon.png": (SWAGGER, "image/png"),
    "docs.js": (HERE, "text/javascript; charset=utf-8"),
}
CSP = "; ".join(
    (
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self' 'unsafe-inline'",
        "img-src 'self' data:",
        "connect-src 'self'",
        "base-uri 'none'",
        "form-action 'none'",
        "frame-ancestors 'none'",
    )
)
HEADERS = {"Content-Security-Policy": CSP, "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer"}


@cache
def _docs_html() -> str:
    return (HERE / "docs.html").read_text(encoding="utf-8")


@router.get("/docs", response_class=HTMLResponse, include_in_schema=False)
async def docs() -> HTMLResponse:
    return HTMLResponse(_docs_html(), headers=HEADERS)


@router.get("/docs/assets/{name}", include_in_schema=False)
async def docs_asset(name: str) -> FileResponse:
    if name not in ASSETS:
        raise HTTPException(404, f"no such asset: the docs page uses {', '.join(sorted(ASSETS))}")
    folder, media_type = ASSETS[name]
    return FileResponse(folder / name, media_type=media_type, headers={**HEADERS, "Cache-Control": "max-age=3600"})
