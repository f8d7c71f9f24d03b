"""VMware plugin against govmomi's vSphere simulator (built from Debian's packages, with changeIds and
QueryChangedDiskAreas added by tests/vcsim): CBT incrementals read exactly the changed areas, the backup
snapshot is always removed, orphans are cleaned, an invalid changeId means a full read, a restored VM's disks
equal the snapshot's, and bad credentials, untrusted certificates and unknown VMs give clear errors."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
import yaml

from orchestrator.backup.runner import run_policy
from orchestrator.catalog.db import Catalog
from orchestrator.cbt.image import restore_image
from orchestrator.policy.model import load_policy
from orchestrator.vault.backend.local import LocalBackend
from orchestrator.vault.repository import Vault
from tests.conftest import PASS
from tests.vcsim import Sim, make_vm, vcsim, vcsim_env  # noqa: F401 - fixtures

pytestmark = pytest.mark.vmware

MiB = 2**20
BLOCK = 64 * 1024  # the vault's block size


@pytest.fixture
def env(tmp_path: Path, vcsim_env: Sim):  # type: ignore[no-untyped-def]  # noqa: F811
    vault_dir = tmp_path / "vault"
    Vault.create(LocalBackend(str(vault_dir)), PASS, kdf_cost=12)

    def policy(vms: list[str], **extra: object):  # type: ignore[no-untyped-def]
        p = tmp_path / "policy.yaml"
        p.write_text(yaml.safe_dump({"policy": "vmware", "client": "acme", "vault": str(vault_dir),
                                     "sources": [vcsim_env.source(vms, **extra)]}))
        return load_policy(str(p))

    si = vcsim_env.connect()
    catalog = Catalog(f"sqlite:///{tmp_path / 'catalog.db'}")
    yield Vault.open(LocalBackend(str(vault_dir)), PASS), catalog, policy, tmp_path, si
    from pyVim.connect import Disconnect

    Disconnect(si)


def run(vault: Vault, catalog: Catalog, policy):  # type: ignore[no-untyped-def]
    vault = Vault.open(vault.backend, PASS)
    return run_policy(policy, vault, catalog), vault


def restored(vault: Vault, snap_id: str, item: str, tmp: Path) -> bytes:
    out = tmp / f"restored-{snap_id[:8]}-{item.replace(':', '_')}.raw"
    restore_image(vault, vault.resolve(snap_id).item(item), str(out))
    data = out.read_bytes()
    out.unlink()
    return data


def blocks_bytes(areas: list[tuple[int, int]], size: int) -> int:
    touched = {b for off, n in areas for b in range(off // BLOCK, (off + n - 1) // BLOCK + 1)}
    return sum(min(BLOCK, size - b * BLOCK) for b in touched)


def test_full_then_incremental_reads_exactly_the_changed_areas(env, vcsim_env: Sim) -> None:  # noqa: F811
    vault, catalog, policy, tmp, si = env
    vm = make_vm(vcsim_env, si, "vm-cbt", [24, 8])
    vm.write("scsi0:0", 0, os.urandom(3 * MiB))
    vm.write("scsi0:0", 20 * MiB, b"\x11" * (2 * MiB))
    vm.write("scsi0:1", 5 * MiB, os.urandom(MiB))
    pol = policy(["vm-cbt"])

    rep, vault = run(vault, catalog, pol)
    (full,) = rep.sources
    assert full.status == "ok", full.errors
    assert any("changed-block tracking was off: enabled now" in w for w in full.warnings), full.warnings
    # the first backup reads the allocated areas only (CBT's "*"), not the 32 MiB of capacity
    assert full.bytes_read == 6 * MiB
    assert vm.snapshot_names() == []

    # scattered writes, some not block-aligned, on both disks
    writes = {"scsi0:0": [(1 * MiB + 100, 5000), (9 * MiB, BLOCK), (23 * MiB + 65000, 1000)],
              "scsi0:1": [(0, 1), (7 * MiB + 4096, 3 * BLOCK)]}
    for disk, areas in writes.items():
        for off, n in areas:
            vm.write(disk, off, os.urandom(n))
    rep, vault = run(vault, catalog, pol)
    (inc,) = rep.sources
    assert inc.status == "ok", inc.errors
    expected = blocks_bytes(writes["scsi0:0"], 24 * MiB) + blocks_bytes(writes["scsi0:1"], 8 * MiB)
    assert inc.bytes_read == expected
    assert vm.snapshot_names() == []
    snap = vault.resolve(inc.snapshot)
    assert snap.meta["capture_modes"] == {"scsi0:0": "incremental", "scsi0:1": "incremental"}
    assert snap.meta["vm_config"]["num_cpu"] == 2
    for disk in ("scsi0:0", "scsi0:1"):
        assert restored(vault, inc.snapshot, disk, tmp) == Path(vm.flat(disk)).read_bytes()
