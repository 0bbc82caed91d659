"""The browser page: GET / (index.html), GET /static/<asset>, GET /ui/config, GET /examples/<name>.png.

Plain HTML, CSS and JavaScript served by the same FastAPI app: no build step, no CDN, no web
fonts. A Content-Security-Policy keeps the page from talking to anything but this server.
The page reads the model from GET /readyz and the few settings it needs from GET /ui/config;
with --demo it also offers example pictures (app/demo.py) that a visitor classifies with a click.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import FileResponse, HTMLResponse, Response

from app.config import Settings

router = APIRouter(tags=["ui"])

HERE = Path(__file__).parent  # index.html, app.css, app.js lie beside this file (package data)
ASSETS = {"app.css": "text/css; charset=utf-8", "app.js": "text/javascript; charset=utf-8"}

# Entropy (nats) of the mean prediction above which the page reads "unsure between these classes"
# (e.g. 0.65 / 0.35 between two classes is 0.65 nats). "Unknown" is the server's own flag.
UNSURE_ENTROPY_NATS = 0.5

CSP = "; ".join(
    (
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' blob: data:",
        "connect-src 'self'",
        "base-uri 'none'",
        "form-action 'none'",
        "frame-ancestors 'none'",
    )
)
HEADERS = {
    "Content-Security-Policy": CSP,
    "Cache-Control": "no-cache",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


@cache
def _index_html() -> str:
    return (HERE / "index.html").read_text(encoding="utf-8")


@router.get("/", response_class=HTMLResponse, include_in_schema=False)
async def index() -> HTMLResponse:
    return HTMLResponse(_index_html(), headers=HEADERS)


@router.get("/static/{name}", include_in_schema=False)
async def asset(name: str) -> FileResponse:
    if name not in ASSETS:
        raise HTTPException(404, f"no such asset: the page uses {', '.join(sorted(ASSETS))}")
    return FileResponse(HERE / name, media_type=ASSETS[name], headers=HEADERS)


@router.get("/examples/{name}.png", include_in_schema=False)
async def example(name: str, request: Request) -> Response:
    """An example picture of the demo (404 when the server does not run the demo)."""
    from app.demo import example_png

    png = example_png(name) if request.app.state.settings.demo else None
    if png is None:
        raise HTTPException(404, f"no example picture {name!r}: the examples are listed in GET /ui/config")
    return Response(png, media_type="image/png", headers=HEADERS)


def examples(settings: Settings) -> list[dict[str, str]]:
    """The demo's example pictures for the page (none outside the demo: they show the shapes world)."""
    if not settings.demo:
        return []
    from app.demo import EXAMPLES

    return [{"name": e.name, "title": e.title, "note": e.note, "url": f"/examples/{e.name}.png"} for e in EXAMPLES]


def ui_config(settings: Settings) -> dict:
    """What the page needs to know about the server; the model itself comes from GET /readyz."""
    return {
        "token_required": settings.token is not None,
        "samples": settings.samples,
        "max_samples": settings.max_samples,
        "max_image_bytes": settings.max_image_bytes,
        "max_names_per_call": settings.max_names_per_call,
        "alpha": settings.alpha,
        "thresholds": {"entropy": UNSURE_ENTROPY_NATS},
        "examples": examples(settings),
    }


@router.get("/ui/config")
async def config(request: Request) -> dict:
    """Settings the page reads: whether a token is needed, sample limits, alpha, the 'unsure' entropy (nats)."""
    return ui_config(request.app.state.settings)
