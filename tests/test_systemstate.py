"""System state of this very host: /etc, boot configuration, crontabs and the generated system-info tree."""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator.backup.runner import run_policy
from orchestrator.catalog.db import Catalog
from orchestrator.policy.model import load_policy
from orchestrator.restore.files import restore_files
from orchestrator.vault.backend.local import LocalBackend
from orchestrator.vault.repository import Vault
from tests.conftest import PASS
from tests.filetrees import write_policy

pytestmark = pytest.mark.files


def test_system_state_is_captured_and_restorable(tmp_path: Path) -> None:
    vault_dir = tmp_path / "vault"
    Vault.create(LocalBackend(str(vault_dir)), PASS, kdf_cost=12)
    policy = load_policy(str(write_policy(tmp_path, vault_dir, [
        {"name": "host", "plugin": "systemstate", "trees": ["/etc"], "extra_paths": []}])))
    vault = Vault.open(LocalBackend(str(vault_dir)), PASS)
    catalog = Catalog(f"sqlite:///{tmp_path / 'c.db'}")
    res = run_policy(policy, vault, catalog).sources[0]
    assert res.snapshot and res.status in ("ok", "partial"), res.errors
    snap = vault.read_snapshot(res.snapshot)
    assert [i["name"] for i in snap.items] == ["/etc", "system-info"]
    names = {r["name"] for r in catalog.ls(catalog.snapshot(res.snapshot), "system-info")}
    assert {"MANIFEST.txt", "packages.tsv", "block-devices.json", "mounts.txt", "partition-tables"} <= names

    out = tmp_path / "restored"
    r = restore_files(vault, snap, ["system-info", "/etc/hostname", "/etc/passwd"], str(out), "never", False,
                      catalog)
    assert not r.errors, r.errors
    info = out / "system-info"
    assert any(line.startswith("dpkg\t") for line in (info / "packages.tsv").read_text().splitlines())
    manifest = (info / "MANIFEST.txt").read_text()
    assert "packages.tsv" in manifest and "/etc" in manifest and "Rebuild outline" in manifest
    assert (out / "etc" / "passwd").read_bytes() == Path("/etc/passwd").read_bytes()
    assert (out / "etc" / "hostname").read_bytes() == Path("/etc/hostname").read_bytes()
    with pytest.raises(Exception, match="not supported"):
        restore_files(vault, snap, ["system-info"], None, "never", True, catalog)  # no original place to go back to
