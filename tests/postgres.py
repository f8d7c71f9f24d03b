"""A real PostgreSQL server for the catalog tests: its own cluster in a temporary directory, on a free loopback
port, trust authentication, started and stopped by the suite (no systemd)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator

import pytest

BIN = "/usr/lib/postgresql/15/bin"


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    assert os.path.exists(f"{BIN}/initdb"), "PostgreSQL 15 is missing: `make test` installs it (postgresql)"
    assert os.geteuid() == 0, "the PostgreSQL fixture switches to the postgres user and must run as root (CI does)"
    base = tempfile.mkdtemp(prefix="dobaas-pg-")
    os.chmod(base, 0o755)
    data = os.path.join(base, "data")
    shutil.chown(base, "postgres", "postgres")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    as_pg = ["runuser", "-u", "postgres", "--"]
    subprocess.run([*as_pg, f"{BIN}/initdb", "-D", data, "--auth=trust", "-U", "postgres", "-E", "UTF8"],
                   check=True, capture_output=True)
    subprocess.run([*as_pg, f"{BIN}/pg_ctl", "-D", data, "-l", os.path.join(base, "log"), "-w", "-o",
                    f"-p {port} -k {base} -c listen_addresses=127.0.0.1", "start"], check=True, capture_output=True)
    try:
        deadline = time.monotonic() + 20
        while subprocess.run([*as_pg, f"{BIN}/pg_isready" if os.path.exists(f"{BIN}/pg_isready") else "pg_isready",
                              "-h", "127.0.0.1", "-p", str(port)], capture_output=True).returncode != 0:
            assert time.monotonic() < deadline, "PostgreSQL did not start"
            time.sleep(0.1)
        subprocess.run([*as_pg, "createdb", "-h", "127.0.0.1", "-p", str(port), "dobaas_catalog"], check=True,
                       capture_output=True)
        yield f"postgresql+psycopg://postgres@127.0.0.1:{port}/dobaas_catalog"
    finally:
        subprocess.run([*as_pg, f"{BIN}/pg_ctl", "-D", data, "-m", "immediate", "stop"], capture_output=True)
        shutil.rmtree(base, ignore_errors=True)
