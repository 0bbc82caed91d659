"""The scale-out setup (docker-compose.scale.yml) without a Docker engine: the resolved compose model
wires api replicas, PostgreSQL and the load balancer together, and a real HAProxy (Debian package),
run with the repository's config against stub replicas on loopback addresses and a stub DNS server,
spreads requests, follows DNS as replicas come and go, and drops a replica whose /readyz fails."""

from __future__ import annotations

import json
import re
import shutil
import socket
import struct
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from tests.deploy.helpers import ROOT, SCALE, SCALE_CPU, SCALE_ENV, compose_config, mounts, run_compose, served_routes
from tests.servers import free_port, stop_process

HAPROXY_CFG = ROOT / "deploy/haproxy/haproxy.cfg"
HAPROXY = shutil.which("haproxy") or next((p for p in ("/usr/sbin/haproxy",) if Path(p).exists()), None)
MAX_IMAGE_BYTES = 10 * 2**20  # vpt-serve's default upload limit (Settings.max_image_bytes)
WAIT_S = 30  # every wait on HAProxy below is bounded by this


# ---------------------------------------------------------------- compose


def _scale(*extra: str) -> dict:
    return compose_config(*SCALE, *extra, **SCALE_ENV)


def test_scale_needs_a_database_password():
    result = run_compose(*SCALE, "config", "-q")
    assert result.returncode != 0 and "POSTGRES_PASSWORD" in result.stderr


def test_api_replicas_have_no_fixed_host_port_or_name():
    for config in (_scale(), compose_config(*SCALE_CPU, **SCALE_ENV)):
        api = config["services"]["api"]
        assert not api.get("ports"), "a fixed host port stops `--scale api=N` at the second replica"
        assert "container_name" not in api
        assert api["depends_on"]["postgres"]["condition"] == "service_healthy"


def test_api_registry_url_points_at_the_postgres_service():
    from app.config import Settings
    from app.registry import is_database_url

    services = _scale()["services"]
    spec = services["api"]["environment"]["VPT_REGISTRY"]
    assert is_database_url(Settings(registry=spec).registry_path), "vpt-serve would take it for a SQLite path"
    url = urlsplit(spec)
    postgres = services["postgres"]
    env = postgres["environment"]
    assert url.scheme == "postgresql" and url.hostname == "postgres" and (url.port or 5432) == 5432
    assert url.username == env["POSTGRES_USER"] and url.path == "/" + env["POSTGRES_DB"]
    assert url.password == SCALE_ENV["POSTGRES_PASSWORD"]
    # postgres reads the same password from a secret file, filled from the same variable
    (secret,) = postgres["secrets"]
    assert env["POSTGRES_PASSWORD_FILE"] == secret["target"]
    assert _scale()["secrets"][secret["source"]]["environment"] == "POSTGRES_PASSWORD"
    assert "POSTGRES_PASSWORD" not in env


def test_postgres_is_pinned_persistent_and_health_checked():
    postgres = _scale()["services"]["postgres"]
    image, _, tag = postgres["image"].partition(":")
    assert image == "postgres" and re.fullmatch(r"\d+(\.\d+)?(-\w+)?", tag), postgres["image"]
    data = mounts(postgres)["/var/lib/postgresql/data"]
    assert data["type"] == "volume" and data["source"] in _scale()["volumes"]
    test = postgres["healthcheck"]["test"]
    assert "pg_isready" in test and test[test.index("-U") + 1] == postgres["environment"]["POSTGRES_USER"]


def _haproxy_sections() -> dict[str, list[str]]:
    """'frontend public' -> its lines, comments dropped (HAProxy's layout: a section header, then indented lines)."""
    sections: dict[str, list[str]] = {}
    current = None
    for raw in HAPROXY_CFG.read_text().splitlines():
        line = raw.split("#", 1)[0].rstrip()
        if not line.strip():
            continue
        if not raw[0].isspace():
            current = line.strip()
            sections[current] = []
        else:
            sections[current].append(line.strip())
    return sections


def _seconds(value: str) -> float:
    number, unit = re.fullmatch(r"(\d+)(ms|s|m)?", value).groups()
    return int(number) * {"ms": 0.001, "s": 1, "m": 60, None: 0.001}[unit]


def test_load_balancer_publishes_the_port_and_reaches_api_on_8000():
    services = _scale()["services"]
    lb = services["lb"]
    assert Path(mounts(lb)["/usr/local/etc/haproxy/haproxy.cfg"]["source"]) == HAPROXY_CFG
    (port,) = lb["ports"]
    assert port["published"] == "8000"
    sections = _haproxy_sections()
    (bind,) = [line for line in sections["frontend public"] if line.startswith("bind ")]
    assert bind.split()[1].rsplit(":", 1)[1] == str(port["target"])
    backend = sections["backend api"]
    (template,) = [line for line in backend if line.startswith("server-template ")]
    _, _, count, address = template.split()[:4]
    api_port = compose_config()["services"]["api"]["ports"][0]["target"]  # the single-replica file publishes it
    assert address == f"api:{api_port}" and "api" in services and int(count) >= 3
    (default_server,) = [line for line in backend if line.startswith("default-server ")]
    resolvers = default_server.split()[default_server.split().index("resolvers") + 1]
    assert f"resolvers {resolvers}" in sections and " check" in f" {default_server}"


def test_load_balancer_health_checks_readyz_and_outwaits_the_server():
    from app.config import Settings

    backend = _haproxy_sections()["backend api"]
    (send,) = [line for line in backend if line.startswith("http-check send ")]
    path = send.split()[send.split().index("uri") + 1]
    assert path == "/readyz" and ("GET", path) in served_routes()
    assert "http-check expect status 200" in backend
    timeouts = {
        parts[1]: _seconds(parts[2])
        for parts in (line.split() for line in _haproxy_sections()["defaults"])
        if parts[0] == "timeout"
    }
    settings = Settings.model_fields
    assert timeouts["server"] > settings["request_timeout_s"].default
    assert timeouts["client"] > settings["request_read_timeout_s"].default
    assert timeouts["http-request"] > settings["request_read_timeout_s"].default
    text = HAPROXY_CFG.read_text()
    assert not re.search(r"req\.body_size|content-length|tune\.bufsize", text, re.I), "no body limit below the server's"


def test_haproxy_accepts_the_config():
    if HAPROXY is None:
        pytest.skip("haproxy absent (CI installs the Debian package haproxy)")
    result = subprocess.run([HAPROXY, "-c", "-f", str(HAPROXY_CFG)], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stdout + result.stderr


# ---------------------------------------------------------------- a real HAProxy, stub DNS and stub replicas


class StubDns:
    """Answers A queries for `api` with `self.addresses` (TTL 1 s), on UDP loopback: Docker's DNS in small."""

    def __init__(self, addresses: list[str]) -> None:
        self.addresses = list(addresses)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _answer(self, query: bytes) -> bytes:
        (ident,) = struct.unpack("!H", query[:2])
        end, labels = 12, []
        while query[end]:
            labels.append(query[end + 1 : end + 1 + query[end]].decode().lower())
            end += 1 + query[end]
        qtype = struct.unpack("!H", query[end + 1 : end + 3])[0]
        question = query[12 : end + 5]
        known = labels == ["api"]
        records = [ip for ip in self.addresses] if known and qtype == 1 else []
        flags = 0x8580 if known else 0x8583  # response, authoritative, recursion; NXDOMAIN for other names
        out = struct.pack("!HHHHHH", ident, flags, 1, len(records), 0, 0) + question
        for ip in records:
            out += struct.pack("!HHHIH", 0xC00C, 1, 1, 1, 4) + socket.inet_aton(ip)
        return out

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                query, peer = self.sock.recvfrom(4096)
            except TimeoutError:
                continue
            except OSError:
                return
            try:
                self.sock.sendto(self._answer(query), peer)
            except (IndexError, struct.error, UnicodeDecodeError):
                continue

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.sock.close()


class StubReplica:
    """A stand-in for one vpt-serve replica: /readyz answers `ready_status`, POST /classify names the replica
    and how many body bytes reached it."""

    def __init__(self, address: str, port: int) -> None:
        replica = self
        self.address, self.ready_status = address, 200

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _reply(self, status: int, body: dict) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
                if self.path == "/readyz":
                    self._reply(replica.ready_status, {"status": "ready"})
                else:
                    self._reply(404, {"detail": "not found"})

            def do_POST(self) -> None:  # noqa: N802
                remaining, received = int(self.headers.get("Content-Length", 0)), 0
                while remaining:
                    chunk = self.rfile.read(min(remaining, 1 << 16))
                    if not chunk:
                        break
                    received, remaining = received + len(chunk), remaining - len(chunk)
                self._reply(200, {"replica": replica.address, "bytes": received})

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer((address, port), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _test_config(dns_port: int, api_port: int, lb_port: int) -> str:
    """The repository's config with only the addresses changed (and faster checks, so the test is short)."""
    text = HAPROXY_CFG.read_text()
    replacements = [
        (r"(?m)^(\s*)parse-resolv-conf$", rf"\1nameserver stub 127.0.0.1:{dns_port}"),
        (r"(?m)^(\s*bind )\S*:8000$", rf"\g<1>127.0.0.1:{lb_port}"),
        (r"(?m)^(\s*server-template \S+ \d+ )api:8000$", rf"\g<1>api:{api_port}"),
        (r"\binter \S+", "inter 200ms"),
        (r"(?m)^(\s*hold \w+) \S+$", r"\1 1s"),
        (r"(?m)^(\s*timeout resolve) \S+$", r"\1 500ms"),
    ]
    for pattern, replacement in replacements:
        text, n = re.subn(pattern, replacement, text)
        assert n >= 1, f"the test no longer matches haproxy.cfg: {pattern}"
    return text


@contextmanager
def _haproxy(tmp_path: Path, dns: StubDns, api_port: int) -> Iterator[str]:
    lb_port = free_port()
    cfg = tmp_path / "haproxy.cfg"
    cfg.write_text(_test_config(dns.port, api_port, lb_port))
    log_path = tmp_path / "haproxy.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([HAPROXY, "-db", "-f", str(cfg)], stdout=log, stderr=subprocess.STDOUT)
    try:
        yield f"http://127.0.0.1:{lb_port}", proc, log_path
    finally:
        stop_process(proc)


def _classify(url: str, body: bytes = b"x") -> dict | None:
    request = urllib.request.Request(url + "/classify", data=body, headers={"Content-Type": "image/png"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.load(response)
    except (urllib.error.URLError, OSError):
        return None


def _spread(url: str, n: int = 30) -> Counter:
    return Counter(a["replica"] for a in (_classify(url) for _ in range(n)) if a is not None)


def _wait_for(url: str, wanted: set[str], proc: subprocess.Popen, log: Path) -> Counter:
    """Send batches until exactly the replicas `wanted` answer, or fail after WAIT_S with HAProxy's log."""
    deadline = time.monotonic() + WAIT_S
    seen: Counter = Counter()
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"haproxy exited:\n{log.read_text()[-2000:]}"
        seen = _spread(url)
        if set(seen) == wanted:
            return seen
        time.sleep(0.3)
    raise AssertionError(f"replicas answering {dict(seen)}, wanted {sorted(wanted)}:\n{log.read_text()[-2000:]}")


def test_haproxy_spreads_follows_dns_and_drops_unready_replicas(tmp_path):
    if HAPROXY is None:
        pytest.skip("haproxy absent (CI installs the Debian package haproxy)")
    port = free_port()
    replicas = {ip: StubReplica(ip, port) for ip in ("127.0.0.2", "127.0.0.3", "127.0.0.4")}
    dns = StubDns(["127.0.0.2", "127.0.0.3"])
    try:
        with _haproxy(tmp_path, dns, port) as (url, proc, log):
            # two replicas in DNS: both get traffic
            _wait_for(url, {"127.0.0.2", "127.0.0.3"}, proc, log)
            # an upload of the server's full size limit passes through whole
            answer = _classify(url, b"\0" * MAX_IMAGE_BYTES)
            assert answer is not None and answer["bytes"] == MAX_IMAGE_BYTES
            # scale up: a third replica appears in DNS and gets traffic without a reload
            dns.addresses.append("127.0.0.4")
            _wait_for(url, {"127.0.0.2", "127.0.0.3", "127.0.0.4"}, proc, log)
            # a replica whose /readyz answers 503 (loading) gets no more traffic
            replicas["127.0.0.3"].ready_status = 503
            _wait_for(url, {"127.0.0.2", "127.0.0.4"}, proc, log)
            # scale down: a replica removed from DNS stops getting traffic
            replicas["127.0.0.3"].ready_status = 200
            dns.addresses.remove("127.0.0.2")
            _wait_for(url, {"127.0.0.3", "127.0.0.4"}, proc, log)
    finally:
        dns.close()
        for replica in replicas.values():
            replica.close()
