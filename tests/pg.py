"""A throwaway PostgreSQL server for tests, or the one VPT_TEST_DATABASE_URL names.

Debian's server binaries (/usr/lib/postgresql/<version>/bin) are found by themselves. The cluster
lives in a temp dir (initdb), listens on 127.0.0.1 on a free port (its unix socket in the temp
dir), keeps fsync on, and runs as the `postgres` OS user when we are root (PostgreSQL refuses
root). stop() and start() let a test take the database away mid-test; pg_ctl stop -m fast ends it.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

USER = "vpt"
PASSWORD = "vpt-test-secret"  # tests check that it never shows in a registry's location
START_TIMEOUT_S = 30


class PgUnavailable(Exception):
    """No PostgreSQL server binaries here."""


def find_bin_dir() -> Path:
    found = shutil.which("pg_ctl")
    if found:
        return Path(found).parent
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"), key=lambda p: int(p.parent.parent.name))
    if versions:
        return versions[-1].parent
    raise PgUnavailable("no PostgreSQL server binaries (pg_ctl) found: apt-get install postgresql")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PgServer:
    """`url` reaches the server; `restartable` says whether stop()/start() may be used (not for an external one)."""

    def __init__(self, url: str, restartable: bool = False) -> None:
        self.url = url
        self.restartable = restartable

    def stop(self) -> None:
        raise NotImplementedError("an external database (VPT_TEST_DATABASE_URL) is not stopped by the tests")

    def start(self) -> None:
        raise NotImplementedError("an external database (VPT_TEST_DATABASE_URL) is not started by the tests")

    def close(self) -> None:
        pass

    @contextmanager
    def stopped(self) -> Iterator[None]:
        """The server is down inside the block and up again after it, whatever the block raised."""
        self.stop()
        try:
            yield
        finally:
            self.start()

    def reset(self) -> None:
        """Drop the registry's tables, so each test starts from an empty registry."""
        import psycopg

        from app.registry.postgres import SCHEMA

        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE")


class LocalPgServer(PgServer):
    """A cluster of our own in a temp dir; close() stops it and deletes the dir."""

    def __init__(self) -> None:
        self.bin = find_bin_dir()
        self.root = Path(tempfile.mkdtemp(prefix="vpt-pg-"))  # under /tmp: the postgres user can reach it
        self.data = self.root / "data"
        self.port = _free_port()
        self._as_postgres = os.geteuid() == 0
        if self._as_postgres:
            shutil.chown(self.root, "postgres", "postgres")
        pwfile = self.root / "pw"
        pwfile.write_text(PASSWORD + "\n")
        if self._as_postgres:
            shutil.chown(pwfile, "postgres", "postgres")
        self._run(
            "initdb", "-D", str(self.data), "-U", USER, "--auth=scram-sha-256", f"--pwfile={pwfile}", "-E", "UTF8",
            "--no-instructions",
        )  # fmt: skip
        super().__init__(f"postgresql://{USER}:{PASSWORD}@127.0.0.1:{self.port}/postgres", restartable=True)
        self.start()

    def _run(self, tool: str, *args: str) -> None:
        command = [str(self.bin / tool), *args]
        if self._as_postgres:
            command = ["runuser", "-u", "postgres", "--", *command]
        result = subprocess.run(command, capture_output=True, text=True, timeout=START_TIMEOUT_S + 10)
        if result.returncode != 0:
            raise RuntimeError(f"{tool} failed ({result.returncode}): {result.stderr.strip()}\n{self.log_tail()}")

    def log_tail(self, chars: int = 2000) -> str:
        log = self.root / "server.log"
        return log.read_text(errors="replace")[-chars:] if log.exists() else ""

    def start(self) -> None:
        options = f"-c listen_addresses=127.0.0.1 -p {self.port} -c unix_socket_directories={self.root} -c fsync=on"
        self._run(
            "pg_ctl", "-D", str(self.data), "-l", str(self.root / "server.log"), "-w", "-t", str(START_TIMEOUT_S),
            "-o", options, "start",
        )  # fmt: skip

    def stop(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")

    def close(self) -> None:
        try:
            if (self.data / "postmaster.pid").exists():
                self.stop()
        finally:
            shutil.rmtree(self.root, ignore_errors=True)


def open_server() -> PgServer:
    """VPT_TEST_DATABASE_URL's server, else a new local one (PgUnavailable when there are no binaries)."""
    url = os.environ.get("VPT_TEST_DATABASE_URL")
    return PgServer(url) if url else LocalPgServer()
