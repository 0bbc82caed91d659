"""The page's routes without a browser: the page, its assets, /ui/config, and the wiring into create_app."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from app.config import Settings
from app.web.router import CSP, router


def make_client(tmp_path: Path, **overrides) -> TestClient:
    app = FastAPI()
    app.state.settings = Settings(data_dir=tmp_path, **overrides)
    app.include_router(router)
    return TestClient(app)


def test_page_and_assets_are_served_with_a_strict_policy(tmp_path: Path) -> None:
    client = make_client(tmp_path)
    page = client.get("/")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert page.headers["content-security-policy"] == CSP
    assert '<script src="/static/app.js"' in page.text and 'href="/static/app.css"' in page.text
    for name, kind in (("app.css", "text/css"), ("app.js", "text/javascript")):
        response = client.get(f"/static/{name}")
        assert response.status_code == 200 and response.headers["content-type"].startswith(kind)
        assert response.text.strip()


@pytest.mark.parametrize("name", ["router.py", "__init__.py", "..%2Frouter.py", "index.html"])
def test_only_the_page_assets_are_served(tmp_path: Path, name: str) -> None:
    response = make_client(tmp_path).get(f"/static/{name}")
    assert response.status_code == 404
    assert "detail" in response.json()


def test_assets_reach_nothing_but_the_server() -> None:
    """No CDN, no web fonts, no absolute URLs in what the page loads."""
    here = Path(__file__).resolve().parents[2] / "app" / "web"
    for name in ("index.html", "app.css", "app.js"):
        text = (here / name).read_text()
        assert "http://" not in text and "https://" not in text and "//cdn" not in text, name
        assert "@import" not in text and "@font-face" not in text, name


def test_config_states_token_samples_and_thresholds(tmp_path: Path) -> None:
    out = make_client(tmp_path).get("/ui/config").json()
    assert out["token_required"] is False
    assert out["samples"] == 20 and out["max_samples"] == 20
    assert out["thresholds"]["entropy"] > 0

    out = make_client(tmp_path, token="s3cret", max_samples=8, alpha=0.2).get("/ui/config").json()
    assert out["token_required"] is True and "s3cret" not in str(out)
    assert out["samples"] == 8 and out["max_samples"] == 8
    assert out["alpha"] == 0.2


def test_create_app_serves_the_page(tmp_path: Path) -> None:
    from app.api import create_app

    app = create_app(Settings(data_dir=tmp_path), load_engine=lambda: None)
    client = TestClient(app)  # no lifespan: the page needs no model
    assert client.get("/").status_code == 200, "create_app must include app.web.router"
    assert client.get("/ui/config").json()["max_samples"] == 20


def test_api_docs_are_served_from_this_server_with_a_policy(tmp_path: Path) -> None:
    from app.api import create_app
    from app.web import docs

    app = create_app(Settings(data_dir=tmp_path, registry=tmp_path / "r.sqlite", device="cpu"), engine=object())
    client = TestClient(app)  # no lifespan: only static routes are asked for
    page = client.get("/docs")
    assert page.status_code == 200 and page.headers["content-security-policy"] == docs.CSP
    assert "script-src 'self';" in docs.CSP and "connect-src 'self';" in docs.CSP
    assert "http://" not in page.text and "https://" not in page.text  # nothing from a CDN
    for name in ("swagger-ui-bundle.js", "swagger-ui.css", "docs.js"):
        assert f"/docs/assets/{name}" in page.text
        asset = client.get(f"/docs/assets/{name}")
        assert asset.status_code == 200 and len(asset.content) > 100, name
    assert client.get("/docs/assets/..%2Fdocs.py").status_code == 404
    assert client.get("/redoc").status_code == 404  # it would load from a CDN


def test_examples_are_offered_only_by_the_demo(tmp_path: Path) -> None:
    from io import BytesIO

    from PIL import Image

    plain = make_client(tmp_path)
    assert plain.get("/ui/config").json()["examples"] == []
    assert plain.get("/examples/yellow-heart.png").status_code == 404  # shapes pictures mean nothing to other models

    demo = make_client(tmp_path, demo=True)
    examples = demo.get("/ui/config").json()["examples"]
    assert len(examples) >= 3 and len({e["name"] for e in examples}) == len(examples)
    colours = []
    for ex in examples:
        response = demo.get(ex["url"])
        assert response.status_code == 200 and response.headers["content-type"] == "image/png"
        image = Image.open(BytesIO(response.content))
        assert image.size == (32, 32) and ex["title"] and ex["note"]
        colours.append(image.convert("RGB").getcolors(32 * 32))
    assert len({str(c) for c in colours}) == len(examples)  # different pictures
    missing = demo.get("/examples/no-such-thing.png")
    assert missing.status_code == 404 and "GET /ui/config" in missing.json()["detail"]
