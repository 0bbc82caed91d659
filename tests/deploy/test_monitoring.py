"""A real Prometheus scrapes a real `vpt-serve --demo`; the Grafana dashboard only asks for exported metrics."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from tests.servers import free_port, run_server

ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS = shutil.which("prometheus")
PROMTOOL = shutil.which("promtool")
SUFFIXES = {
    "counter": ("", "_total"),
    "histogram": ("_bucket", "_count", "_sum", "_created"),
    "gauge": ("",),
    "info": ("_info",),
    "summary": ("_count", "_sum", "_created"),
}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with run_server(tmp_path_factory.mktemp("deploy-server")) as srv:
        png = tmp_path_factory.mktemp("img") / "x.png"
        Image.fromarray(np.full((32, 32, 3), 200, np.uint8)).save(png)
        body, ctype = _multipart(png.read_bytes())
        req = urllib.request.Request(srv.url + "/classify", data=body, headers={"Content-Type": ctype})
        urllib.request.urlopen(req, timeout=30).close()  # so request and uncertainty series exist
        yield srv


def _multipart(data: bytes) -> tuple[bytes, str]:
    boundary = "vptboundary"
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="x.png"\r\n'
            f"Content-Type: image/png\r\n\r\n"
        ).encode()
        + data
        + f"\r\n--{boundary}--\r\n".encode()
    )
    return body, f"multipart/form-data; boundary={boundary}"


def _metrics_text(url: str) -> str:
    with urllib.request.urlopen(url + "/metrics", timeout=10) as response:
        return response.read().decode()


def exported_names(text: str) -> set[str]:
    """Every series name /metrics can produce, from its # TYPE lines (covers histograms with no data yet)."""
    names = set()
    for name, kind in re.findall(r"^# TYPE (\S+) (\S+)$", text, flags=re.M):
        names |= {name + suffix for suffix in SUFFIXES.get(kind, ("",))}
    return names


def test_promtool_accepts_metrics(server):
    if PROMTOOL is None:
        pytest.skip("promtool absent (CI installs the Debian package prometheus)")
    result = subprocess.run(
        [PROMTOOL, "check", "metrics"], input=_metrics_text(server.url), capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_dashboard_queries_only_exported_metrics(server):
    names = exported_names(_metrics_text(server.url))
    dashboard = json.loads((ROOT / "deploy/grafana/dashboards/vpt.json").read_text())
    exprs = [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]
    assert len(exprs) >= 8
    used = {m for e in exprs for m in re.findall(r"\bvpt_[a-z_]+", e)}
    assert used and used <= names, f"not exported: {sorted(used - names)}"
    for wanted in (
        "vpt_prediction_entropy_nats_bucket",
        "vpt_prediction_mutual_information_nats_bucket",
        "vpt_batch_size_bucket",
        "vpt_queue_depth",
    ):
        assert wanted in used


def test_prometheus_scrapes_the_server(server, tmp_path):
    if PROMETHEUS is None:
        pytest.skip("prometheus absent (CI installs the Debian package prometheus)")
    config = yaml.safe_load((ROOT / "deploy/prometheus/prometheus.yml").read_text())
    config["global"]["scrape_interval"] = "1s"
    config["scrape_configs"][0]["static_configs"][0]["targets"] = [server.url.removeprefix("http://")]
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    log = open(tmp_path / "prometheus.log", "wb")
    proc = subprocess.Popen(
        [
            PROMETHEUS,
            f"--config.file={tmp_path / 'prometheus.yml'}",
            f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    api = f"http://127.0.0.1:{port}/api/v1"
    try:
        up, value = None, None
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and (up != "up" or value is None):
            time.sleep(1)
            assert proc.poll() is None, (tmp_path / "prometheus.log").read_text()[-2000:]
            try:
                targets = json.load(urllib.request.urlopen(api + "/targets", timeout=5))["data"]["activeTargets"]
                up = targets[0]["health"] if targets else None
                query = urllib.parse.urlencode({"query": "vpt_registered_classes"})
                result = json.load(urllib.request.urlopen(f"{api}/query?{query}", timeout=5))["data"]["result"]
                value = float(result[0]["value"][1]) if result else None
            except OSError:
                continue
        assert up == "up", f"target health {up!r}"
        assert value == float(len(server.get_json("/classes")["classes"]))
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()
