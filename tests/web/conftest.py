"""Browser fixtures: `vpt-serve --demo` on a free loopback port and a headless Chromium driving it.

The demo serves the model shipped in the package (see tests/servers.py), ready in seconds. Each
session gets its own class registry, seeded with the demo's own 100 classes. Every wait is bounded; the server and the
browser are stopped in teardown.
"""

from __future__ import annotations

import os
import shutil
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.servers import Server, run_server

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


def artifacts_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if os.environ.get("VPT_ARTIFACTS"):
        path = Path(os.environ["VPT_ARTIFACTS"]).expanduser()
        path.mkdir(parents=True, exist_ok=True)
        return path
    return tmp_path_factory.mktemp("artifacts")


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    reason = browser_missing()
    if reason:
        pytest.skip(reason)
    # the demo's own classes: its posterior is calibrated for them, so the page shows calibrated answers
    with run_server(tmp_path_factory.mktemp("web-server"), classes=None) as srv:
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
