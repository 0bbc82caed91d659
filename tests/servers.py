"""Run `vpt-serve --demo` as a real subprocess on a free loopback port, for end-to-end tests.

The demo serves the model shipped in the package (training/shapes/prebuilt): nothing is built,
the backbone is unpacked once into $VPT_TEST_DATA_DIR (default ~/.cache/vpt-test). Each server
gets its own class registry. Every wait is bounded; the server is stopped on exit.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

CLASSES = ["red circle", "red square", "blue triangle", "green star", "yellow heart", "purple ring"]
MAX_SAMPLES = 10
START_TIMEOUT_S = 120.0  # the demo builds nothing: ready in seconds (60 s is the promise on a cold cache)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def shared_data_dir() -> Path:
    return Path(os.environ.get("VPT_TEST_DATA_DIR") or Path.home() / ".cache" / "vpt-test").expanduser()


def serve_command() -> list[str]:
    script = Path(sys.executable).with_name("vpt-serve")
    return [str(script)] if script.exists() else [sys.executable, "-m", "app.cli"]


@dataclass
class Server:
    url: str
    process: subprocess.Popen
    log: Path

    def log_tail(self, chars: int = 4000) -> str:
        return self.log.read_text(errors="replace")[-chars:] if self.log.exists() else ""

    def get_json(self, path: str) -> dict:
        with urllib.request.urlopen(self.url + path, timeout=10) as response:
            return json.load(response)


def wait_ready(server: Server, timeout_s: float) -> None:
    """Poll /readyz until 200; fail with the server's log tail if it exits or times out."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(f"vpt-serve exited with code {server.process.returncode}:\n{server.log_tail()}")
        try:
            with urllib.request.urlopen(server.url + "/readyz", timeout=5) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.5)
    raise RuntimeError(f"vpt-serve was not ready after {timeout_s:.0f} s:\n{server.log_tail()}")


def stop_process(process: subprocess.Popen) -> None:
    """Terminate, then kill if it does not stop in time."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=15)


def start_server(
    root: Path,
    *extra: str,
    token: str | None = None,
    classes: list[str] | None = CLASSES,
    registry: str | None = None,
    env: dict[str, str] | None = None,
) -> Server:
    """Spawn `vpt-serve --demo` (not waited for: see wait_ready), logging to root/server.log. `registry`: a
    PostgreSQL URL (default: a SQLite file under root); `env`: extra VPT_* variables; `extra`: more flags."""
    root.mkdir(parents=True, exist_ok=True)
    port = free_port()
    flags = {
        "--data-dir": str(shared_data_dir()),
        "--host": "127.0.0.1",
        "--port": str(port),
        "--device": "cpu",
        "--max-samples": str(MAX_SAMPLES),
        "--log-level": "warning",
    }
    if classes is not None:
        flags["--classes"] = ",".join(classes)
    command = [*serve_command(), "--demo", *(part for pair in flags.items() for part in pair), *extra]
    child_env = {k: v for k, v in os.environ.items() if not k.startswith("VPT_")}  # no stray VPT_TOKEN and the like
    child_env["OMP_NUM_THREADS"] = "1"
    # the registry through the environment, as the docs say to: a database URL's password never shows in ps
    child_env["VPT_REGISTRY"] = registry or str(root / "classes.sqlite")
    child_env.update(env or {})
    if token is not None:
        child_env["VPT_TOKEN"] = token  # not a flag: it would show in the process list
    log = root / "server.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=child_env, cwd=root)
    return Server(f"http://127.0.0.1:{port}", process, log)


@contextmanager
def run_server(
    root: Path,
    *extra: str,
    token: str | None = None,
    classes: list[str] | None = CLASSES,
    registry: str | None = None,
    env: dict[str, str] | None = None,
) -> Iterator[Server]:
    """`vpt-serve --demo` with its own registry under root (or `registry`), seeded with `classes` (None: the
    demo's own 100, the class set its posterior is calibrated for); ready on entry, stopped on exit."""
    srv = start_server(root, *extra, token=token, classes=classes, registry=registry, env=env)
    try:
        wait_ready(srv, START_TIMEOUT_S)
        yield srv
    finally:
        stop_process(srv.process)


@contextmanager
def run_servers(roots: list[Path], *extra: str, **options) -> Iterator[list[Server]]:
    """Several servers started at once (they load side by side), all ready on entry, all stopped on exit."""
    servers: list[Server] = []
    try:
        for root in roots:
            servers.append(start_server(root, *extra, **options))
        for srv in servers:
            wait_ready(srv, START_TIMEOUT_S)
        yield servers
    finally:
        for srv in servers:
            stop_process(srv.process)
