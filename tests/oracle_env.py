"""The Oracle test environment: database hosts that are real OpenSSH servers (tests/ansible_hosts.py: private
mount namespaces, /opt overlaid) with an `oracle` user, an ORACLE_HOME whose bin/rman is the strict stand-in
(tests/oracle_standin.py), and a strict fake of python-oracledb's connection answering only the statements the
plugin sends, from the same model the stand-in keeps."""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import pytest

from tests.ansible_hosts import NamespaceHost, start_host, stop_host

HOME = "/opt/oracle/product/19c/dbhome_1"
STAGE = "/opt/oracle/stage"
MODEL = "/opt/oracle/bin/oramodel"
STANDIN = Path(__file__).with_name("oracle_standin.py")


@dataclass
class OracleHosts:
    db1: NamespaceHost
    db2: NamespaceHost
    key: str
    known_hosts: str

    def model(self, host: NamespaceHost, sid: str, *args: str) -> str:
        return host.ssh(f"runuser -u oracle -- {MODEL} {sid} {' '.join(shlex.quote(a) for a in args)}").stdout

    def state(self, host: NamespaceHost, sid: str) -> dict:
        """The model as the host sees it, read from the host's /opt overlay (no SSH round trip)."""
        return json.loads((host.base / "upper" / "opt" / "oracle" / "model" / f"{sid}.json").read_text())

    def ssh_fields(self, host: NamespaceHost) -> dict:
        return {"host": "127.0.0.1", "port": host.port, "user": "oracle", "identity_file": self.key,
                "known_hosts": self.known_hosts}


def _prepare(host: NamespaceHost) -> None:
    # sshd reads the shared authorized_keys file as the user logging in: let oracle reach it
    for d in [host.base, *host.base.parents]:
        if str(d) in ("/", "/tmp"):
            break
        d.chmod(d.stat().st_mode | 0o005)
    (host.base / "authorized_keys").chmod(0o644)
    # a password that matches nothing, not a locked account ("!"): sshd without PAM refuses locked accounts
    host.ssh("id oracle >/dev/null 2>&1 || useradd -m -d /opt/oracle -s /bin/sh -p '*' oracle")
    host.ssh(f"mkdir -p {HOME}/bin {HOME}/dbs /opt/oracle/bin /opt/oracle/model {STAGE} /opt/oracle/arch")
    shutil.copy(STANDIN, host.base / "standin.py")
    host.ssh(f"install -m 0755 {host.base}/standin.py {HOME}/bin/rman && ln -sf {HOME}/bin/rman {MODEL} && "
             "chown -R oracle:oracle /opt/oracle")


@pytest.fixture(scope="session")
def oracle_hosts(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OracleHosts]:
    base = tmp_path_factory.mktemp("oracle")
    key = base / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    known = str(base / "known_hosts")
    hosts: list[NamespaceHost] = []
    try:
        for name in ("db1", "db2"):
            hosts.append(start_host(name, base / name, str(key), known))
            _prepare(hosts[-1])
        yield OracleHosts(hosts[0], hosts[1], str(key), known)
    finally:
        for h in hosts:
            stop_host(h)


def _date(text: str) -> datetime:
    """Oracle DATE columns come back from python-oracledb as naive datetimes (the database's clock)."""
    return datetime.strptime(text, "%Y-%m-%d %H:%M:%S")


class FakeOracleError(Exception):
    """Shaped as python-oracledb's DatabaseError: the ORA- message first."""


class FakeCursor:
    def __init__(self, conn: FakeConnection) -> None:
        self.conn = conn
        self.rows: list[tuple] = []

    def __enter__(self) -> FakeCursor:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def execute(self, sql: str, binds: dict | None = None) -> None:
        from plugins.oracle import discovery as d

        db = self.conn.hosts.state(self.conn.host, self.conn.sid)
        binds = binds or {}
        self.conn.statements.append(sql)
        if sql == d.DATABASE:
            self.rows = [(db["dbid"], db["name"], db["log_mode"], db["cdb"])]
        elif sql == d.VERSION:
            self.rows = [(db["version"],)]
        elif sql == d.BCT:
            self.rows = [(db["bct"],)]
        elif sql == d.SIZE:
            self.rows = [(len(db["rows"]) * 8192 + 2**30,)]
        elif sql == d.CURRENT_SCN:
            self.rows = [(db["scn"],)]
        elif sql == d.LOGS:
            self.rows = [(a["seq"], a["first"], a["next"], _date(a["first_time"]), _date(a["next_time"]))
                         for a in db["archived"] if binds["lo"] <= a["seq"] <= binds["hi"]]
        elif sql == d.PIECE_SCN:
            self.rows = [(b["level"], b["base"], b["ckpt"], _date(b["ckpt_time"])) for b in db["backups"]
                         if b["kind"] == "datafile" and b["piece"] == binds["handle"]]
        else:
            raise FakeOracleError("ORA-00942: table or view does not exist")

    def fetchall(self) -> list[tuple]:
        return self.rows


class FakeConnection:
    """Answers the plugin's statements (plugins/oracle/discovery.py) from the host's model, refuses the rest."""

    def __init__(self, hosts: OracleHosts, host: NamespaceHost, sid: str) -> None:
        self.hosts, self.host, self.sid = hosts, host, sid
        self.statements: list[str] = []
        self.closed = False

    def cursor(self) -> FakeCursor:
        return FakeCursor(self)

    def close(self) -> None:
        self.closed = True


def fake_connect(hosts: OracleHosts, host: NamespaceHost, sid: str, password: str = "secret"):  # type: ignore[no-untyped-def]
    """A stand-in for plugins.oracle.discovery.connect: checks the password, the DSN's shape."""
    from orchestrator.plugin.errors import DobaasError

    def connect(dsn: str, user: str, pw: str | None) -> FakeConnection:
        if not re.fullmatch(r"[\w.-]+:\d+/\w+", dsn):
            raise DobaasError(f"cannot connect to {dsn} as {user}: DPY-4027: no configuration directory to search "
                              "for tnsnames.ora")
        if pw != password:
            raise DobaasError(f"cannot connect to {dsn} as {user}: ORA-01017: invalid username/password; logon "
                              "denied")
        return FakeConnection(hosts, host, sid)

    return connect
