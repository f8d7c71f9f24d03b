"""Grandfather-father-son retention over years of daily snapshots, and `prune --policy`."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from orchestrator.vault.prune import select_retention
from orchestrator.vault.snapshot import Snapshot
from tests.conftest import Cli

pytestmark = [pytest.mark.vault, pytest.mark.scheduler, pytest.mark.usefixtures("utc_local")]


def daily(name: str, first: str, last: str) -> list[Snapshot]:
    d, end, out = datetime.fromisoformat(first), datetime.fromisoformat(last), []
    while d <= end:
        t = d.replace(hour=22, tzinfo=UTC)
        out.append(Snapshot(name=name, items=[], time=t.isoformat(), id=f"{name}-{t:%Y-%m-%d}"))
        d += timedelta(days=1)
    return out


def test_gfs_keeps_exactly_the_expected_days() -> None:
    snaps = daily("acme/docs", "2024-01-01", "2026-11-26")  # almost three years, one a day
    keep, remove, why = select_retention(snaps, {"keep_daily": 7, "keep_monthly": 6, "keep_yearly": 3})
    kept = sorted(s.id.removeprefix("acme/docs-") for s in keep)
    assert kept == sorted([f"2026-11-{d}" for d in range(20, 27)]
                          + ["2026-10-31", "2026-09-30", "2026-08-31", "2026-07-31", "2026-06-30"]
                          + ["2025-12-31", "2024-12-31"])
    assert len(keep) + len(remove) == len(snaps)
    assert why["acme/docs-2026-11-26"] == ["daily", "monthly", "yearly"]
    assert why["acme/docs-2024-12-31"] == ["yearly"]


def test_weekly_and_last_and_names_are_separate() -> None:
    snaps = daily("a", "2026-11-01", "2026-11-26") + daily("b", "2026-11-25", "2026-11-26")
    keep, _remove, why = select_retention(snaps, {"keep_last": 2, "keep_weekly": 2})
    kept_a = sorted(s.id for s in keep if s.name == "a")
    # last 2 (26th, 25th) + newest of ISO week 48 (Thu 26th) and of week 47 (Sun 22nd)
    assert kept_a == ["a-2026-11-22", "a-2026-11-25", "a-2026-11-26"]
    assert sorted(s.id for s in keep if s.name == "b") == ["b-2026-11-25", "b-2026-11-26"]
    assert why["a-2026-11-26"] == ["last", "weekly"]


def test_no_rule_keeps_everything() -> None:
    snaps = daily("a", "2026-01-01", "2026-03-01")
    keep, remove, _ = select_retention(snaps, {"keep_daily": 0})
    assert len(keep) == len(snaps) and remove == []


def test_prune_with_a_policy(cli: Cli, tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "f").write_text("1")
    vault = tmp_path / "vault"
    policy = tmp_path / "p.yaml"
    policy.write_text(f"policy: p\nclient: acme\nvault: {vault}\nretention: {{keep_last: 1}}\nsources:\n"
                      f"  - {{name: docs, plugin: files, paths: [{src}]}}\n")
    cli("vault", "init", str(vault), "--kdf-cost", "12")
    for i in range(3):
        (src / "f").write_text(str(i))
        cli("run", str(policy))
    img = tmp_path / "other.img"
    img.write_bytes(b"x" * 10000)
    for _ in range(2):
        cli("backup", "image", str(img), "--vault", str(vault), "--name", "other")
    dry = json.loads(cli("prune", "--policy", str(policy), "--dry-run", "--json").stdout)
    assert len(dry["removed"]) == 2 and len(dry["kept"]) == 1 and dry["dry_run"]
    assert dry["gc"]["ran"] and dry["gc"]["chunks_deleted"] > 0  # what the removals would free, not 0
    assert len(json.loads(cli("snapshots", "--vault", str(vault), "--json").stdout)) == 5  # nothing deleted
    human = cli("prune", "--policy", str(policy), "--dry-run").stdout
    assert "keep " in human and ": last" in human and human.count("  remove ") == 2
    done = json.loads(cli("prune", "--policy", str(policy), "--json").stdout)
    assert sorted(done["removed"]) == sorted(dry["removed"]) and done["gc"]["ran"]
    left = json.loads(cli("snapshots", "--vault", str(vault), "--json").stdout)
    assert sorted(s["name"] for s in left) == ["acme/docs", "other", "other"]  # not the policy's: untouched
    assert json.loads(cli("verify", "--vault", str(vault), "--json").stdout)["ok"]
    p = cli("prune", "--vault", str(vault), check=False)
    assert p.returncode == 2 and "--keep-last N or --policy FILE" in p.stderr
