"""A real `vpt-serve` (uvicorn) subprocess on a loopback port, hit by concurrent clients."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.app.conftest import image_bytes
from tests.app.tiny import TRAINED, write_tiny_model
from tests.servers import Server as RunningServer
from tests.servers import free_port, wait_ready

ROOT = Path(__file__).resolve().parents[2]
START_TIMEOUT_S = 90


class Server:
    def __init__(self, args: list[str], log: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        self.log = log
        with open(log, "ab") as fh:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "app.cli", "--host", "127.0.0.1", "--port", str(self.port), *args],
                cwd=ROOT,
                env=env,
                stdout=fh,
                stderr=subprocess.STDOUT,
            )
        try:
            wait_ready(RunningServer(self.url, self.proc, log), START_TIMEOUT_S)
        except RuntimeError:
            self.kill()
            raise

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return write_tiny_model(tmp_path_factory.mktemp("tiny-served"), ("vpt",))


def server_args(tiny, registry: Path) -> list[str]:
    model = ["--backbone", str(tiny["config"]), "--weights", str(tiny["weights"]), "--posterior", str(tiny["vpt"])]
    limits = "--device cpu --samples 8 --max-samples 8 --max-batch-size 16 --max-queue-delay-ms 30".split()
    return [*model, *limits, "--registry", str(registry), "--log-level", "warning", "--token", "t0ken"]


def assert_same_answer(a: dict, b: dict, tol: float = 1e-5) -> None:
    """Equal up to float rounding: a batched matmul may round differently from a single one."""
    assert a["samples"] == b["samples"] and a["model"] == b["model"]
    assert sorted(c["label"] for c in a["classes"]) == sorted(c["label"] for c in b["classes"])
    by_label = {c["label"]: c for c in b["classes"]}
    for c in a["classes"]:
        for key in ("probability", "variance", "std"):
            assert c[key] == pytest.approx(by_label[c["label"]][key], abs=tol)
    for key in ("entropy", "expected_entropy", "mutual_information"):
        assert a[key] == pytest.approx(b[key], abs=tol)


def _histogram(text: str, name: str) -> dict[str, float]:
    out = {}
    for line in text.splitlines():
        if line.startswith(name + "_bucket"):
            le = line.split('le="')[1].split('"')[0]
            out[le] = float(line.rsplit(" ", 1)[1])
        elif line.startswith(name + "_count"):
            out["count"] = float(line.rsplit(" ", 1)[1])
    return out


async def _classify_all(url: str, images: list[bytes]) -> list[dict]:
    async with httpx.AsyncClient(base_url=url, timeout=60) as client:

        async def one(data: bytes) -> dict:
            r = await client.post("/classify", files={"file": ("x.png", data, "image/png")})
            assert r.status_code == 200, r.text
            return r.json()

        return await asyncio.gather(*(one(d) for d in images))


def test_concurrent_clients_are_batched_and_answers_match_single_requests(tiny, tmp_path):
    server = Server(server_args(tiny, tmp_path / "classes.sqlite"), tmp_path / "server.log")
    try:
        images = [image_bytes((15 * i, 255 - 15 * i, 100), size=(48, 40), seed=i) for i in range(16)]
        single = [httpx.post(server.url + "/classify", files={"file": ("x.png", d)}, timeout=30).json() for d in images]
        ready = httpx.get(server.url + "/readyz").json()
        assert ready["model"]["variant"] == "vpt" and ready["classes"] == len(TRAINED)
        for _ in range(3):
            together = asyncio.run(_classify_all(server.url, images))
            for a, b in zip(together, single):
                assert_same_answer(a, b)
        hist = _histogram(httpx.get(server.url + "/metrics").text, "vpt_batch_size")
        assert hist["count"] > hist["1.0"], hist  # some forward passes held more than one image
        # the same image always gets the same answer (vpt: fixed, seeded sample bank)
        for a in asyncio.run(_classify_all(server.url, images[:1] * 8)):
            assert_same_answer(a, single[0])
    finally:
        server.kill()


def test_registered_classes_survive_kill_9(tiny, tmp_path):
    registry = tmp_path / "classes.sqlite"
    server = Server(server_args(tiny, registry), tmp_path / "server.log")
    auth = {"Authorization": "Bearer t0ken"}
    try:
        r = httpx.post(server.url + "/classes", json={"names": ["pink heart", "teal star"]}, headers=auth)
        assert r.status_code == 200
        assert httpx.delete(server.url + "/classes/red", headers=auth).status_code == 200
        answer = httpx.post(server.url + "/classify", files={"file": ("x.png", image_bytes())}).json()
    finally:
        server.kill()  # SIGKILL: no clean shutdown
    server = Server(server_args(tiny, registry), tmp_path / "server.log")
    try:
        expected = [n for n in TRAINED if n != "red"] + ["pink heart", "teal star"]
        assert httpx.get(server.url + "/classes").json()["classes"] == expected
        again = httpx.post(server.url + "/classify", files={"file": ("x.png", image_bytes())}).json()
        assert again == answer  # deterministic across restarts too
    finally:
        server.kill()


def test_port_0_logs_the_port_it_bound(tiny, tmp_path):
    args = [sys.executable, "-m", "app.cli", "--host", "127.0.0.1", "--port", "0", *server_args(tiny, tmp_path / "r")]
    args[args.index("warning")] = "info"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(args, cwd=ROOT, env=env, stderr=subprocess.PIPE, text=True)
    try:
        for line in proc.stderr:
            found = re.search(r"app\.cli: serving .* on http://127\.0\.0\.1:(\d+) ", line)
            if found:
                break
        assert found, "no 'serving ... on' line"
        port = int(found.group(1))
        assert port != 0
        wait_ready(RunningServer(f"http://127.0.0.1:{port}", proc, tmp_path / "none.log"), START_TIMEOUT_S)
    finally:
        proc.kill()
        proc.wait(10)
