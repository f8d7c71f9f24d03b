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


def test_a_first_backup_of_many_files_is_recorded_from_disk_in_parts(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """Staged rows go to local disk past a part's worth (here 1,000) and are recorded part by part: a full
    snapshot of 10,000 rows, then a delta that changes 2,500 of them and deletes 10, are browsed exactly."""
    from orchestrator import spool
    from orchestrator.catalog.rows import entry_values
    from orchestrator.vault.snapshot import Snapshot

    monkeypatch.setattr(spool, "PART", 1000)
    spilled: list[int] = []
    real_spill = spool.Spool._spill

    def counting_spill(self: spool.Spool) -> None:
        real_spill(self)
        spilled.append(len(self._rows))

    monkeypatch.setattr(spool.Spool, "_spill", counting_spill)
    cat = Catalog(f"sqlite:///{tmp_path / 'c.db'}")
    item = {"name": "files", "type": "tree", "root": "/srv"}
    first = Snapshot("acme/docs", [item], id="a" * 64, meta={"plugin": "files"})
    entries = [{"p": ""}, *({"p": f"f{k:05}.txt", "t": "f", "s": k} for k in range(10_000))]
    entries[0]["t"] = "d"
    rows = list(entry_values(item, entries))
    for i in range(0, len(rows), 3000):  # parts as the run sends them
        cat.stage_entries(first.id, rows[i : i + 3000])
    assert len(spilled) == 10 and not any(spilled)  # ten parts written out, none left in memory after each
    cat.record_snapshot(first, "/vault")
    snap1 = cat.snapshot(first.id)
    listed = cat.ls(snap1, "/srv")
    assert len(listed) == 10_000 and {e["size"] for e in listed} == set(range(10_000))

    second = Snapshot("acme/docs", [item], id="b" * 64, parent=first.id, meta={"plugin": "files"})
    changed = [{"p": f"f{k:05}.txt", "t": "f", "s": k + 1_000_000} for k in range(0, 10_000, 4)]
    cat.stage_entries(second.id, list(entry_values(item, changed)))
    cat.record_delta(second, "/vault", None, [f"/srv/f{k:05}.txt" for k in range(1, 40, 4)])
    now = {e["name"]: e["size"] for e in cat.ls(cat.snapshot(second.id), "/srv")}
    assert len(now) == 10_000 - 10
    assert all(now[f"f{k:05}.txt"] == k + 1_000_000 for k in range(0, 10_000, 4))
    assert now["f00002.txt"] == 2 and "f00001.txt" not in now
    assert len(cat.ls(cat.snapshot(first.id), "/srv")) == 10_000  # the first snapshot is unchanged
