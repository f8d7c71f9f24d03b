"""A real MariaDB server for the mysql tests: a throwaway datadir, a free loopback port, binary logging on,
started and stopped by the suite (no systemd, --no-defaults so Debian's /etc/mysql is not read)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from plugins.mysql.connection import Endpoint


@dataclass
class MariaDB:
    base: str
    port: int
    proc: subprocess.Popen

    @property
    def endpoint(self) -> Endpoint:
        return Endpoint("127.0.0.1", self.port, None, "root", None)

    def sql(self, stmt: str, database: str | None = None) -> str:
        p = subprocess.run(["mariadb", "--no-defaults", "-h127.0.0.1", f"-P{self.port}", "-uroot", "-N", "-B",
                            *([database] if database else []), "-e", stmt], capture_output=True, text=True)
        if p.returncode:
            raise RuntimeError(f"{stmt}: {p.stderr.strip()}")
        return p.stdout

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        shutil.rmtree(self.base, ignore_errors=True)


@contextmanager
def serve_datadir(data: str) -> Iterator[MariaDB]:
    """A server on an existing data directory (a restored one), stopped afterwards."""
    db = start_mariadb(binlog=False, data=data)
    try:
        yield db
    finally:
        db.stop()


def start_mariadb(binlog: bool = True, data: str | None = None) -> MariaDB:
    assert shutil.which("mariadbd"), "MariaDB is missing: `make test` installs it (mariadb-server)"
    base = tempfile.mkdtemp(prefix="dobaas-mariadb-")
    if data is None:
        data = os.path.join(base, "data")
        subprocess.run(["mariadb-install-db", "--no-defaults", f"--datadir={data}", "--user=root",
                        "--auth-root-authentication-method=normal", "--skip-test-db"], check=True,
                       capture_output=True)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    args = ["mariadbd", "--no-defaults", f"--datadir={data}", f"--socket={base}/sock", f"--port={port}",
            "--bind-address=127.0.0.1", "--user=root", f"--log-error={base}/err.log", "--innodb-buffer-pool-size=64M"]
    if binlog:
        args += [f"--log-bin={base}/main-bin", "--server-id=1", "--binlog-format=ROW"]
    proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    db = MariaDB(base, port, proc)
    deadline = time.monotonic() + 30
    while True:
        try:
            db.sql("SELECT 1")
            return db
        except RuntimeError:
            if proc.poll() is not None or time.monotonic() > deadline:
                err = Path(base, "err.log")
                log = err.read_text()[-2000:] if err.exists() else ""
                db.stop()
                raise RuntimeError(f"MariaDB did not start: {log}") from None
            time.sleep(0.1)


@pytest.fixture(scope="session")
def mariadb() -> Iterator[MariaDB]:
    db = start_mariadb()
    yield db
    db.stop()
