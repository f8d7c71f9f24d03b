"""The SQL Server plugin's scenarios against a real SQL Server, for whoever has one: outside the default run
(tests/real is not collected by plain `pytest`), run with ``DOBAAS_MSSQL_DSN=... pytest tests/real -m
mssql_real``; without the variable they fail loudly rather than skip. The DSN: ``mssql://LOGIN:PASSWORD@HOST:PORT/?share=smb://HOST/SHARE&share_path=
\\\\HOST\\SHARE&share_user=U&share_password=P`` — a share that the SQL Server service account can write and this
machine can read. The tests create and drop databases named ``dobaas_contract_*``."""

from __future__ import annotations

import os
import time
import uuid
from datetime import datetime
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

import pytest
import yaml

from orchestrator.backup.runner import run_policy
from orchestrator.policy.model import load_policy
from orchestrator.vault.backend.local import LocalBackend
from orchestrator.vault.repository import Vault
from tests.conftest import PASS, Cli

pytestmark = pytest.mark.mssql_real


@pytest.fixture
def real(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    dsn = os.environ.get("DOBAAS_MSSQL_DSN")
    assert dsn, "set DOBAAS_MSSQL_DSN to run the real-SQL-Server contract tests (see this file's docstring)"
    import pymssql

    u = urlsplit(dsn)
    q = {k: v[0] for k, v in parse_qs(u.query).items()}
    monkeypatch.setenv("SQL_PASSWORD", unquote(u.password or ""))
    monkeypatch.setenv("SMB_PASSWORD", q.get("share_password", ""))
    name = f"dobaas_contract_{uuid.uuid4().hex[:8]}"
    conn = pymssql.connect(server=u.hostname, port=str(u.port or 1433), user=unquote(u.username or ""),
                           password=unquote(u.password or ""), autocommit=True)
    cur = conn.cursor()
    cur.execute(f"CREATE DATABASE [{name}]")
    cur.execute(f"ALTER DATABASE [{name}] SET RECOVERY FULL")
    cur.execute(f"CREATE TABLE [{name}].dbo.t (id int primary key, v nvarchar(100), "
                "at datetime2 default sysdatetime())")
    vault_dir = tmp_path / "vault"
    Vault.create(LocalBackend(str(vault_dir)), PASS, kdf_cost=12)
    p = tmp_path / "real.yaml"
    p.write_text(yaml.safe_dump({"policy": "real", "client": "contract", "vault": str(vault_dir), "sources": [{
        "name": "sql", "plugin": "mssql", "host": u.hostname, "port": u.port or 1433, "user": unquote(u.username),
        "password_env": "SQL_PASSWORD", "databases": [name], "share": q["share"], "share_path": q["share_path"],
        "share_user": q.get("share_user"), "share_password_env": "SMB_PASSWORD", "full_every": 3}]}))
    yield cur, name, load_policy(str(p)), vault_dir
    for db in (name, f"{name}_last", f"{name}_pit"):
        cur.execute(f"IF DB_ID(N'{db}') IS NOT NULL DROP DATABASE [{db}]")
    conn.close()


def test_chain_and_point_in_time_restore_against_a_real_server(real) -> None:  # type: ignore[no-untyped-def]
    cur, name, pol, vault_dir = real
    marks = []
    for day in range(4):
        for i in range(3):
            cur.execute(f"INSERT INTO [{name}].dbo.t (id, v) VALUES ({day * 10 + i}, N'day{day}-{i}')")
            time.sleep(1.1)
            marks.append((datetime.now(), day * 10 + i))
        (res,) = run_policy(pol, Vault.open(LocalBackend(str(vault_dir)), PASS), None).sources
        assert res.status == "ok", res.errors
    cli = Cli({"SQL_PASSWORD": os.environ["SQL_PASSWORD"], "SMB_PASSWORD": os.environ["SMB_PASSWORD"]})
    sid = res.snapshot
    cli("restore", "mssql", sid[:12], "--vault", str(vault_dir), "--as-database", f"{name}_last")
    cur.execute(f"SELECT COUNT(*) FROM [{name}_last].dbo.t")
    assert cur.fetchone()[0] == 12
    t, last_id = marks[-2]
    cli("restore", "mssql", sid[:12], "--vault", str(vault_dir), "--as-database", f"{name}_pit", "--to-time",
        t.strftime("%Y-%m-%d %H:%M:%S"))
    cur.execute(f"SELECT MAX(id) FROM [{name}_pit].dbo.t")
    assert cur.fetchone()[0] == last_id
