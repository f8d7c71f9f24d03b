"""Job history and status in the catalog, and upgrading an existing catalog through its migrations."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import create_engine, inspect, text

from orchestrator.catalog.db import HEAD, Catalog
from tests.conftest import Cli

pytestmark = pytest.mark.scheduler


def test_jobs_and_status(cli: Cli, tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.txt").write_text("a")
    vault = tmp_path / "vault"
    policy = tmp_path / "p.yaml"
    policy.write_text(f"policy: nightly\nclient: acme\nvault: {vault}\nsources:\n"
                      f"  - {{name: docs, plugin: files, paths: [{src}]}}\n"
                      f"  - {{name: gone, plugin: files, paths: [{tmp_path / 'missing'}]}}\n")
    cli("vault", "init", str(vault), "--kdf-cost", "12")
    for _ in range(2):
        assert cli("run", str(policy), check=False).returncode == 1  # one source fails, the other still runs
    jobs = json.loads(cli("jobs", "--json").stdout)
    assert [(j["source"], j["status"]) for j in jobs] == [("gone", "failed"), ("docs", "ok")] * 2
    assert jobs[0]["run_id"] == jobs[1]["run_id"] != jobs[2]["run_id"]
    assert "missing" in jobs[0]["errors"][0] and jobs[1]["snapshot_id"] and jobs[1]["files"] == 1
    assert len(json.loads(cli("jobs", "--source", "docs", "--json").stdout)) == 2
    st = cli("status", "--json", check=False)
    assert st.returncode == 1
    by_source = {r["source"]: r for r in json.loads(st.stdout)}
    assert by_source["docs"]["last_status"] == "ok" and 0 <= by_source["docs"]["success_age_hours"] < 1
    assert by_source["gone"]["last_success"] is None and by_source["gone"]["last_status"] == "failed"
    human = cli("status", check=False).stdout
    assert "acme/docs" in human and "never" in human
    pdir = tmp_path / "policies"
    pdir.mkdir()
    (pdir / "p.yaml").write_text(policy.read_text().replace("sources:", "schedule: '0 22 * * *'\nsources:"))
    st = json.loads(cli("status", "--policies", str(pdir), "--json", check=False).stdout)
    nxt = datetime.fromisoformat(st[0]["next_run"])
    assert nxt > datetime.now(UTC) and nxt.astimezone().hour == 22 and nxt.astimezone().minute == 0
    assert "next run" in cli("status", "--policies", str(pdir), check=False).stdout


def test_existing_catalog_is_upgraded_in_place(tmp_path: Path) -> None:
    from alembic import command
    from alembic.config import Config

    url = f"sqlite:///{tmp_path / 'old.db'}"
    engine = create_engine(url)
    cfg = Config()
    cfg.set_main_option("script_location", os.path.join(os.path.dirname(__file__), "..", "orchestrator",
                                                        "catalog", "migrations"))
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "0001")  # a catalog written by the first release
        conn.execute(text("insert into clients (name) values ('acme')"))
    assert "jobs" not in inspect(engine).get_table_names()
    cat = Catalog(url)
    assert {"jobs", "alert_state"} <= set(inspect(cat.engine).get_table_names())
    with cat.engine.connect() as conn:
        assert conn.execute(text("select name from clients")).scalar() == "acme"
        assert conn.execute(text("select version_num from alembic_version")).scalar() == HEAD


def test_processes_opening_a_new_catalog_at_once_all_succeed(tmp_path: Path) -> None:
    """A daemon creating its catalog while `dobaas jobs` polls it: before the migration lock, one of them
    crashed on 'table alembic_version already exists'."""
    import subprocess
    import sys

    code = "import sys; from orchestrator.catalog.db import Catalog; Catalog(sys.argv[1]).restores()"
    for round_ in range(3):
        url = f"sqlite:///{tmp_path}/race-{round_}.db"
        procs = [subprocess.Popen([sys.executable, "-c", code, url], stderr=subprocess.PIPE, text=True)
                 for _ in range(6)]
        errors = [p.communicate(timeout=120)[1] for p in procs]
        assert all(p.returncode == 0 for p in procs), [e[-500:] for e in errors if e]
        assert Catalog(url).restores() == []
