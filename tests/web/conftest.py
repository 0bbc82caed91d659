"""Browser fixtures: `vpt-serve --demo` on a free loopback port and a headless Chromium driving it.

The demo model is built on first use (a few minutes on two cores) and cached in
$VPT_TEST_DATA_DIR (default ~/.cache/vpt-test), so later runs start in seconds. Each session
gets its own class registry, seeded with CLASSES. Every wait is bounded; the server and the
browser are stopped in teardown.
"""

from __future__ import annotations

import json
import os
import shutil
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

import numpy as np
import pytest
from PIL import Image

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
CHROME_FLAGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
)
CLASSES = ["red circle", "red square", "blue triangle", "green star", "yellow heart", "purple ring"]
MAX_SAMPLES = 10
START_TIMEOUT_S = 1200.0  # includes the demo's one-off build (pretrain + fit) on a cold cache
WAIT_S = 30.0  # any one thing in the page


def browser_missing() -> str | None:
    """Why the browser tests cannot run here (None when they can)."""
    if not CHROMIUM.exists():
        return f"{CHROMIUM} is absent (CI installs it: apt-get install -y chromium chromium-driver)"
    if not CHROMEDRIVER.exists():
        return f"{CHROMEDRIVER} is absent (apt-get install -y chromium-driver)"
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "the selenium package is not installed (pip install -e '.[dev]')"
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def shared_data_dir() -> Path:
    return Path(os.environ.get("VPT_TEST_DATA_DIR") or Path.home() / ".cache" / "vpt-test").expanduser()


def artifacts_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if os.environ.get("VPT_ARTIFACTS"):
        path = Path(os.environ["VPT_ARTIFACTS"]).expanduser()
        path.mkdir(parents=True, exist_ok=True)
        return path
    return tmp_path_factory.mktemp("artifacts")


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


def _wait_ready(server: Server, timeout_s: float) -> None:
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


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=15)


@contextmanager
def run_server(root: Path, *extra: str, token: str | None = None) -> Iterator[Server]:
    """`vpt-serve --demo` with its own registry under root; stopped on exit."""
    port = free_port()
    flags = {
        "--data-dir": str(shared_data_dir()),
        "--registry": str(root / "classes.sqlite"),
        "--classes": ",".join(CLASSES),
        "--host": "127.0.0.1",
        "--port": str(port),
        "--device": "cpu",
        "--max-samples": str(MAX_SAMPLES),
        "--log-level": "warning",
    }
    command = [*serve_command(), "--demo", *(part for pair in flags.items() for part in pair), *extra]
    env = {k: v for k, v in os.environ.items() if not k.startswith("VPT_")}  # no stray VPT_TOKEN and the like
    env["OMP_NUM_THREADS"] = "1"
    if token is not None:
        env["VPT_TOKEN"] = token  # not a flag: it would show in the process list
    log = root / "server.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=root)
    srv = Server(f"http://127.0.0.1:{port}", process, log)
    try:
        _wait_ready(srv, START_TIMEOUT_S)
        yield srv
    finally:
        _stop(process)


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    reason = browser_missing()
    if reason:
        pytest.skip(reason)
    with run_server(tmp_path_factory.mktemp("web-server")) as srv:
        try:
            urllib.request.urlopen(srv.url + "/", timeout=10).close()
        except urllib.error.HTTPError as exc:
            pytest.fail(f"GET / answered {exc.code}: create_app must include app.web.router")
        yield srv


@pytest.fixture(scope="session")
def browser(tmp_path_factory: pytest.TempPathFactory, server: Server):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service as ChromeService

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in CHROME_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}")
    options.add_argument("--window-size=1280,860")
    service = ChromeService(executable_path=str(CHROMEDRIVER))
    driver = webdriver.Chrome(options=options, service=service)
    try:
        driver.set_page_load_timeout(WAIT_S)
        driver.set_script_timeout(WAIT_S)
        yield driver
    finally:
        driver.quit()


@pytest.fixture(scope="session")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return artifacts_dir(tmp_path_factory)


@pytest.fixture(scope="session")
def shape_image(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A clean shapes-world picture of a red circle, scaled up (nearest) so the preview is large."""
    from training.shapes.world import WorldConfig, classnames, labelled_sample

    pixels, _ = labelled_sample(WorldConfig(), 0, "eval", 3, classnames().index("red circle"), 0.0)
    path = tmp_path_factory.mktemp("images") / "red-circle.png"
    Image.fromarray(np.asarray(pixels, dtype=np.uint8)).resize((192, 192), Image.NEAREST).save(path)
    return path


@pytest.fixture(scope="session")
def text_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("files") / "notes.txt"
    path.write_text("this is not an image\n")
    return path


def save_full_page(driver, path: Path) -> None:
    """A screenshot of the whole page: grow the window to the page's height, then restore it."""
    size = driver.get_window_size()
    page = driver.execute_script("return document.documentElement.scrollHeight")
    chrome = driver.execute_script("return window.outerHeight - window.innerHeight")
    driver.set_window_size(size["width"], page + max(0, chrome))
    try:
        assert driver.save_screenshot(str(path)), f"could not write {path}"
    finally:
        driver.set_window_size(size["width"], size["height"])


def copy_if_asked(screenshot: Path) -> None:
    """VPT_UPDATE_SCREENSHOT=1 refreshes docs/screenshot.png (the README's picture) from this run."""
    if os.environ.get("VPT_UPDATE_SCREENSHOT") == "1":
        target = Path(__file__).resolve().parents[2] / "docs" / "screenshot.png"
        target.parent.mkdir(exist_ok=True)
        shutil.copyfile(screenshot, target)
