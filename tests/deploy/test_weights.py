"""Weights for offline hosts: the fetch helper's exported file loads back, and missing weights stop
`vpt-serve` at start-up with one clear line (as the Docker image runs it: HF_HUB_OFFLINE=1)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import torch

from training.backbone import load_backbone

ROOT = Path(__file__).resolve().parents[2]
TINY = ROOT / "tests/assets/tiny-clip.json"
TIMEOUT_S = 300


def _command(script: str, module: str) -> list[str]:
    path = Path(sys.executable).with_name(script)
    return [str(path)] if path.exists() else [sys.executable, "-m", module]


def _offline_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """No VPT_* from the caller, no network, and an empty Hugging Face home."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VPT_", "HF_"))}
    env.update(OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path / "hf-home"), **extra)
    return env


def test_serve_without_cached_or_mounted_weights_stops_with_one_clear_line(tmp_path):
    cache = tmp_path / "weights"
    cache.mkdir()
    env = _offline_env(
        tmp_path, VPT_CACHE_DIR=str(cache), VPT_DATA_DIR=str(tmp_path / "data"), VPT_DEVICE="cpu", VPT_PORT="0"
    )
    result = subprocess.run(
        _command("vpt-serve", "app.cli"), env=env, cwd=tmp_path, capture_output=True, text=True, timeout=TIMEOUT_S
    )
    assert result.returncode == 2, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: weights 'openai' for ViT-B-16-quickgelu are neither in the cache"), last
    assert str(cache) in last and "vpt-fetch-weights" in last


def test_fetch_weights_offline_fails_with_the_same_line(tmp_path):
    result = subprocess.run(
        [*_command("vpt-fetch-weights", "training.fetch_weights"), "--cache-dir", str(tmp_path / "c")],
        env=_offline_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
    )
    assert result.returncode == 2, result.stderr[-3000:]
    assert result.stderr.strip().splitlines()[-1].startswith("error: weights 'openai' for ViT-B-16-quickgelu")


def test_fetch_weights_exports_a_file_the_backbone_loads(tmp_path):
    out = tmp_path / "tiny.safetensors"
    result = subprocess.run(
        [
            *_command("vpt-fetch-weights", "training.fetch_weights"),
            f"{TINY}:none",
            "--cache-dir",
            str(tmp_path / "cache"),
            "--export",
            str(out),
        ],
        env=_offline_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert out.is_file()
    reference = load_backbone(str(TINY), "none", "cpu")
    loaded = load_backbone(str(TINY), str(out), "cpu")
    assert loaded.identity.weights.startswith("sha256:")
    want, got = reference.model.state_dict(), loaded.model.state_dict()
    assert want.keys() == got.keys()
    assert all(torch.equal(want[k], got[k]) for k in want)
