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

import pytest
import yaml

from tests.deploy.conftest import metrics_text
from tests.deploy.helpers import exported_names
from tests.servers import free_port, stop_process

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "deploy/grafana/dashboards/vpt.json"
PROMETHEUS = shutil.which("prometheus")
PROMTOOL = shutil.which("promtool")
SCRAPE_TIMEOUT_S = 90


def dashboard_exprs() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    return [t["expr"] for panel in dashboard["panels"] for t in panel.get("targets", [])]


def test_promtool_accepts_metrics(server):
    if PROMTOOL is None:
        pytest.skip("promtool absent (CI installs the Debian package prometheus)")
    result = subprocess.run(
        [PROMTOOL, "check", "metrics"], input=metrics_text(server.url), capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_uncertainty_metrics_are_exported(server):
    names = exported_names(metrics_text(server.url))
    for wanted in (
        "vpt_prediction_entropy_nats_bucket",
        "vpt_prediction_mutual_information_nats_bucket",
        "vpt_unknown_predictions_total",
        "vpt_prediction_set_size_bucket",
        "vpt_calibrated",
    ):
        assert wanted in names


def test_dashboard_queries_only_exported_metrics(server):
    names = exported_names(metrics_text(server.url))
    exprs = dashboard_exprs()
    assert len(exprs) >= 8
    used = {m for e in exprs for m in re.findall(r"\bvpt_[a-z_]+", e)}
    assert used and used <= names, f"not exported: {sorted(used - names)}"
    for wanted in (  # what the dashboard is for: traffic, latency, batching, queue, uncertainty drift
        "vpt_http_requests_total",
        "vpt_http_request_duration_seconds_bucket",
        "vpt_batch_size_bucket",
        "vpt_queue_depth",
        "vpt_prediction_entropy_nats_bucket",
        "vpt_prediction_mutual_information_nats_bucket",
        "vpt_unknown_predictions_total",
    ):
        assert wanted in used


AGGREGATION = re.compile(r"\b(sum|max|min|count|avg)(\s+by\s*\([^)]*\))?\s*$")
RANGE_FUNCTIONS = ("rate", "irate", "increase")


def _enclosing_call(expr: str, position: int) -> tuple[str, int]:
    """The text before the innermost unclosed '(' left of `position`, and that parenthesis' index."""
    depth = 0
    for i in range(position - 1, -1, -1):
        if expr[i] == ")":
            depth += 1
        elif expr[i] == "(":
            if depth == 0:
                return expr[:i], i
            depth -= 1
    return "", -1


def aggregated_over_replicas(expr: str) -> bool:
    """Every vpt_ series in `expr` is inside sum/max/min/count/avg (through rate() and friends), and every
    histogram_quantile keeps only `le` (and optionally instance) apart: one line for all replicas."""
    for match in re.finditer(r"\bvpt_[a-z_]+", expr):
        before, index = _enclosing_call(expr, match.start())
        while before.rstrip().endswith(RANGE_FUNCTIONS):
            before, index = _enclosing_call(expr, index)
        if not AGGREGATION.search(before):
            return False
    for by in re.findall(r"histogram_quantile\(\s*[\d.]+\s*,\s*sum by \(([^)]*)\)", expr):
        if "le" not in [label.strip() for label in by.split(",")]:
            return False
    return expr.count("histogram_quantile(") == len(re.findall(r"histogram_quantile\(\s*[\d.]+\s*,\s*sum by", expr))


def test_aggregation_check_can_fail():
    assert not aggregated_over_replicas("vpt_queue_depth")
    assert not aggregated_over_replicas("rate(vpt_queue_rejected_total[5m])")
    assert not aggregated_over_replicas("histogram_quantile(0.9, rate(vpt_batch_size_bucket[5m]))")
    assert not aggregated_over_replicas("histogram_quantile(0.9, sum by (instance) (rate(vpt_batch_size_bucket[5m])))")
    assert aggregated_over_replicas("sum(rate(vpt_batch_size_sum[5m])) / sum(rate(vpt_batch_size_count[5m]))")


def test_dashboard_sums_over_replicas():
    """With `--scale api=N` Prometheus scrapes N instances: a bare series would draw N lines per query."""
    exprs = dashboard_exprs()
    assert [e for e in exprs if not aggregated_over_replicas(e)] == []
    assert any("by (instance" in e for e in exprs), "a per-replica breakdown panel is expected"


def test_promtool_accepts_the_scrape_config():
    if PROMTOOL is None:
        pytest.skip("promtool absent (CI installs the Debian package prometheus)")
    result = subprocess.run(
        [PROMTOOL, "check", "config", str(ROOT / "deploy/prometheus/prometheus.yml")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_dashboard_queries_are_valid_promql(tmp_path):
    if PROMTOOL is None:
        pytest.skip("promtool absent (CI installs the Debian package prometheus)")
    rules = [{"record": f"vpt:dashboard_{i}", "expr": expr} for i, expr in enumerate(dashboard_exprs())]
    (tmp_path / "rules.yml").write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    result = subprocess.run(
        [PROMTOOL, "check", "rules", str(tmp_path / "rules.yml")], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr


def _get_json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.load(response)


def _query(api: str, expr: str) -> float | None:
    result = _get_json(f"{api}/query?{urllib.parse.urlencode({'query': expr})}")["data"]["result"]
    return float(result[0]["value"][1]) if result else None


def _scrape_config(target: str) -> dict:
    """The repo's Prometheus config, pointed at `target` and scraping every second.

    Its DNS discovery of `api` needs Docker's DNS, so the job gets `target` as a static target instead.
    """
    config = yaml.safe_load((ROOT / "deploy/prometheus/prometheus.yml").read_text())
    config["global"]["scrape_interval"] = "1s"
    config["global"]["evaluation_interval"] = "1s"
    (job,) = [j for j in config["scrape_configs"] if j["job_name"] == "vpt"]
    job.pop("dns_sd_configs")
    job["static_configs"] = [{"targets": [target]}]
    return config


def test_prometheus_scrapes_the_server(server, tmp_path):
    if PROMETHEUS is None:
        pytest.skip("prometheus absent (CI installs the Debian package prometheus)")
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(_scrape_config(server.url.removeprefix("http://"))))
    port = free_port()
    log_path = tmp_path / "prometheus.log"
    with open(log_path, "wb") as log:
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
        health, classes, predictions = None, None, None
        deadline = time.monotonic() + SCRAPE_TIMEOUT_S
        while time.monotonic() < deadline and (health != "up" or classes is None or predictions is None):
            time.sleep(1)
            assert proc.poll() is None, f"prometheus exited:\n{log_path.read_text()[-2000:]}"
            try:
                targets = _get_json(api + "/targets")["data"]["activeTargets"]
                health = targets[0]["health"] if targets else None
                classes = _query(api, 'vpt_registered_classes{job="vpt"}')
                predictions = _query(api, 'vpt_prediction_entropy_nats_count{job="vpt"}')
            except OSError:
                continue
        assert health == "up", f"target health {health!r}:\n{log_path.read_text()[-2000:]}"
        assert _query(api, 'up{job="vpt"}') == 1.0
        assert classes == float(len(server.get_json("/classes")["classes"]))
        assert predictions is not None and predictions >= 1  # the fixture's /classify, through Prometheus
    finally:
        stop_process(proc)
