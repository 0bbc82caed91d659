"""The Dockerfile checked without a Docker engine: its health check against a live server, its
build context (what COPY takes past .dockerignore builds a package with every data file and
command), and the promises it makes (pinned torch, non-root user, vpt-serve entry point)."""

from __future__ import annotations

import fnmatch
import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

from tests.servers import free_port

ROOT = Path(__file__).resolve().parents[2]


def instructions() -> list[tuple[str, str]]:
    """(KEYWORD, arguments) per Dockerfile instruction, continuation lines joined, comments dropped."""
    lines = [line for line in (ROOT / "Dockerfile").read_text().splitlines() if not line.lstrip().startswith("#")]
    joined = re.sub(r"\\\n\s*", " ", "\n".join(lines))
    out = []
    for line in joined.splitlines():
        if line.strip():
            keyword, _, args = line.strip().partition(" ")
            out.append((keyword.upper(), args.strip()))
    return out


def _one(keyword: str) -> str:
    found = [args for kw, args in instructions() if kw == keyword]
    assert len(found) == 1, f"expected one {keyword}, found {found}"
    return found[0]


def healthcheck_command() -> list[str]:
    args = _one("HEALTHCHECK")
    assert "CMD [" in args, "HEALTHCHECK should use the exec form"
    return json.loads(args[args.index("CMD") + 3 :].strip())


def _run_healthcheck(port: int) -> subprocess.CompletedProcess:
    command = healthcheck_command()
    assert command[0] == "python"  # the image has no curl
    env = {**os.environ, "VPT_PORT": str(port)}
    return subprocess.run([sys.executable, *command[1:]], env=env, capture_output=True, text=True, timeout=30)


def test_healthcheck_passes_on_a_ready_server(server):
    assert "/readyz" in " ".join(healthcheck_command())
    result = _run_healthcheck(int(server.url.rsplit(":", 1)[1]))
    assert result.returncode == 0, result.stderr


def test_healthcheck_fails_without_a_server():
    assert _run_healthcheck(free_port()).returncode != 0


def test_image_promises():
    pyproject = (ROOT / "pyproject.toml").read_text()
    pinned = {name: pin for pin, name in re.findall(r'^\s*"((torch|torchvision)==[^"]+)"', pyproject, re.M)}
    assert pinned.keys() == {"torch", "torchvision"}
    runs = " ".join(args for kw, args in instructions() if kw == "RUN")
    for name in ("torch", "torchvision"):
        assert pinned[name] in runs, f"the image should install {pinned[name]} as pyproject.toml pins it"
    user = [args for kw, args in instructions() if kw == "USER"]
    assert user and user[-1].split(":")[0] not in ("root", "0")
    assert json.loads(_one("ENTRYPOINT")) == ["vpt-serve"]
    env = " ".join(args for kw, args in instructions() if kw == "ENV")
    assert "VPT_HOST=0.0.0.0" in env and "HF_HUB_OFFLINE=1" in env
    assert "BAKE_WEIGHTS" in _one("ARG")


def _ignored(path: str, patterns: list[str]) -> bool:
    """Enough of .dockerignore's matching for our patterns (no `!` exceptions)."""
    parts = Path(path).parts
    for pattern in patterns:
        pattern = pattern.removeprefix("**/").strip("/")
        if any(fnmatch.fnmatch(p, pattern) for p in parts) or fnmatch.fnmatch(path, pattern):
            return True
    return False


def test_build_context_builds_a_complete_package(tmp_path):
    patterns = [
        p.strip() for p in (ROOT / ".dockerignore").read_text().splitlines() if p.strip() and not p.startswith("#")
    ]
    assert not any(p.startswith("!") for p in patterns), "extend _ignored() for ! patterns"
    context = tmp_path / "context"
    for kw, args in instructions():
        if kw != "COPY" or "--from" in args:
            continue
        *sources, _dest = args.split()
        for source in sources:
            assert not _ignored(source, patterns), f"COPY {source} is excluded by .dockerignore"
            for path in [ROOT / source] if (ROOT / source).is_file() else sorted((ROOT / source).rglob("*")):
                rel = path.relative_to(ROOT).as_posix()
                if path.is_file() and not _ignored(rel, patterns):
                    (context / rel).parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(path, context / rel)
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(tmp_path), "."],
        cwd=context,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    (wheel,) = tmp_path.glob("vpt-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        entry_points = next(zf.read(n).decode() for n in names if n.endswith("entry_points.txt"))
    for wanted in ("app/web/index.html", "app/web/app.js", "app/web/app.css", "training/shapes/configs/"):
        assert any(n.startswith(wanted) for n in names), f"{wanted} missing from the image's package"
    for command in ("vpt-serve", "vpt-train", "vpt-fetch-weights"):
        assert re.search(rf"^{command} = ", entry_points, flags=re.M), f"{command} not installed in the image"
