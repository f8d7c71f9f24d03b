"""The catalog on a real PostgreSQL server: the same browsing, search, rebuild and job history as on SQLite."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from orchestrator.backup.runner import run_policy
from orchestrator.catalog.db import Catalog
from orchestrator.catalog.rebuild import rebuild
from orchestrator.policy.model import load_policy
from orchestrator.vault.backend.local import LocalBackend
from orchestrator.vault.repository import Vault
from tests.conftest import PASS
from tests.filetrees import write_policy
from tests.test_files import _catalog_view

pytestmark = pytest.mark.files


def test_catalog_on_postgresql_matches_sqlite(tmp_path: Path, postgres_url: str) -> None:
    src = tmp_path / "src"
    (src / "docs").mkdir(parents=True)
    (src / "docs" / "a.txt").write_text("a")
    (src / "ünïcødé.xlsx").write_text("b")
    vault_dir = tmp_path / "vault"
    Vault.create(LocalBackend(str(vault_dir)), PASS, kdf_cost=12)
    vault = Vault.open(LocalBackend(str(vault_dir)), PASS)
    policy = load_policy(str(write_policy(tmp_path, vault_dir, [
        {"name": "docs", "plugin": "files", "paths": [str(src)]}])))
    pg = Catalog(postgres_url)
    lite = Catalog(f"sqlite:///{tmp_path / 'c.db'}")
    for i in range(3):
        (src / "docs" / f"day{i}.xlsx").write_text(str(i))
        run_policy(policy, vault, pg)
        time.sleep(0.01)
    rebuild(vault, lite)
    assert _catalog_view(pg) == _catalog_view(lite)
    found = pg.find("*.xlsx")
    assert {f["path"].rsplit("/", 1)[1]: f["snapshot_count"] for f in found} == {
        "day0.xlsx": 3, "day1.xlsx": 2, "day2.xlsx": 1, "ünïcødé.xlsx": 3}
    assert [j["status"] for j in pg.jobs()] == ["ok"] * 3
    rebuild(vault, pg)  # rebuild works in place on PostgreSQL too
    assert _catalog_view(pg) == _catalog_view(lite)


def test_rows_staged_for_a_snapshot_whose_recording_failed_never_reach_another(tmp_path: Path) -> None:
    """A run sends a snapshot's rows in parts before recording it; parts left by a failed recording are
    dropped, never added to the next snapshot."""
    from orchestrator.catalog.rows import entry_values
    from orchestrator.vault.snapshot import Snapshot

    cat = Catalog(f"sqlite:///{tmp_path / 'c.db'}")
    item = {"name": "files", "type": "tree", "root": "/srv"}
    good = Snapshot("acme/docs", [item], id="b" * 64, meta={"plugin": "files"})
    cat.stage_entries("a" * 64, list(entry_values(item, [{"p": "stale.txt", "t": "f", "s": 1}])))
    cat.stage_entries(good.id, list(entry_values(item, [{"p": "", "t": "d"}, {"p": "a.txt", "t": "f", "s": 3}])))
    cat.record_snapshot(good, "/vault")
    snap = cat.snapshot(good.id)
    assert [e["name"] for e in cat.ls(snap, "/srv")] == ["a.txt"]
    assert not cat.find("stale*")
