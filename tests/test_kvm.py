"""KVM plugin against a real libvirt + QEMU: dirty-bitmap incrementals read exactly what the guest wrote, full +
incrementals restore byte-identical disks, broken chains fall back to full captures, a restored VM starts."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
import yaml

from orchestrator.backup.runner import run_policy
from orchestrator.catalog.db import Catalog
from orchestrator.cbt.image import restore_image
from orchestrator.policy.model import load_policy
from orchestrator.vault.backend.local import LocalBackend
from orchestrator.vault.repository import Vault
from tests.conftest import PASS, Cli
from tests.libvirt_env import Domain, Domains, virsh

pytestmark = pytest.mark.kvm

MiB = 2**20
BLOCK = 64 * 1024  # QEMU bitmap granularity and the vault's block size


@pytest.fixture
def env(tmp_path: Path, domains: Domains):  # type: ignore[no-untyped-def]
    vault_dir = tmp_path / "vault"
    Vault.create(LocalBackend(str(vault_dir)), PASS, kdf_cost=12)
    work = Path(domains.root) / "work"

    def policy(domain_patterns: list[str], **extra: object):  # type: ignore[no-untyped-def]
        p = tmp_path / "policy.yaml"
        p.write_text(yaml.safe_dump({"policy": "vms", "client": "acme", "vault": str(vault_dir), "sources": [
            {"name": "vms", "plugin": "kvm", "uri": "qemu:///system", "domains": domain_patterns,
             "work_dir": str(work), **extra}]}))
        return load_policy(str(p))

    vault = Vault.open(LocalBackend(str(vault_dir)), PASS)
    catalog = Catalog(f"sqlite:///{tmp_path / 'catalog.db'}")
    return vault, catalog, policy, tmp_path, domains


def run(vault: Vault, catalog: Catalog, policy):  # type: ignore[no-untyped-def]
    vault = Vault.open(vault.backend, PASS)  # a fresh handle per run, as the daemon does
    rep = run_policy(policy, vault, catalog)
    return rep, vault


def restored(vault: Vault, snap_id: str, item: str, tmp: Path) -> bytes:
    snap = vault.resolve(snap_id)
    out = tmp / f"restored-{snap_id[:8]}-{item}.raw"
    restore_image(vault, snap.item(item), str(out))
    data = out.read_bytes()
    out.unlink()
    return data


def our_checkpoints(dom: Domain) -> list[str]:
    return [n for n in virsh("checkpoint-list", dom.name, "--name").split() if n.startswith("dobaas-")]


def qcow2_bitmaps(path: str) -> list[str]:
    info = json.loads(subprocess.run(["qemu-img", "info", "-U", "--output=json", path], capture_output=True,
                                     text=True, check=True).stdout)
    return [b["name"] for b in info.get("format-specific", {}).get("data", {}).get("bitmaps", [])]


def test_incremental_reads_exactly_the_dirty_extents_and_restores_identical(env) -> None:  # type: ignore[no-untyped-def]
    vault, catalog, policy, tmp, domains = env
    dom = domains.create("dbs-web", {"vda": 64 * MiB, "vdb": 32 * MiB})
    dom.write("vda", 0, 3 * MiB, 0x11)
    dom.write("vdb", 5 * MiB, 1 * MiB, 0x22)
    pol = policy(["dbs-web"])

    rep, vault = run(vault, catalog, pol)
    (full,) = rep.sources
    assert full.status == "ok", full
    assert full.source == "vms/dbs-web" and full.mode == "full"
    assert full.consistency == "crash-consistent"  # no guest agent in a domain without an OS
    assert full.bytes_read == 4 * MiB  # only the allocated areas: holes are neither read nor stored

    # scattered writes, some unaligned: each dirties the 64 KiB bitmap granules it touches
    writes = [("vda", 10 * MiB, 4096), ("vda", 20 * MiB + 1000, 200_000), ("vda", 63 * MiB, MiB),
              ("vdb", 0, 512), ("vdb", 31 * MiB + 65536, 65536)]
    for i, (t, off, n) in enumerate(writes):
        dom.write(t, off, n, 0x30 + i)
    expected = sum(len({b for b in range(off // BLOCK, (off + n - 1) // BLOCK + 1)}) * BLOCK
                   for _t, off, n in writes)
    rep, vault = run(vault, catalog, pol)
    (inc,) = rep.sources
    assert inc.status == "ok" and inc.mode == "incremental", inc
    assert inc.bytes_read == expected, (inc.bytes_read, expected)
    snap = vault.resolve(inc.snapshot)
    assert snap.meta["capture_modes"] == {"vda": "incremental", "vdb": "incremental"}
    assert "<name>dbs-web</name>" in snap.meta["domain_xml"]

    dom.write("vda", 40 * MiB, 2 * MiB, 0x55)
    rep, vault = run(vault, catalog, pol)
    (inc2,) = rep.sources
    assert inc2.bytes_read == 2 * MiB
    for t in ("vda", "vdb"):
        dom.flush(t)
        assert restored(vault, inc2.snapshot, t, tmp) == dom.raw(t), t
    # the first incremental is still restorable as it was
    assert restored(vault, inc.snapshot, "vda", tmp)[40 * MiB : 42 * MiB] == bytes(2 * MiB)
    # one checkpoint (one bitmap per image) remains: they do not pile up
    assert len(our_checkpoints(dom)) == 1
    virsh("destroy", dom.name)  # QEMU writes its persistent bitmaps into the images when it stops
    for t in ("vda", "vdb"):
        assert qcow2_bitmaps(dom.disks[t]) == our_checkpoints(dom)

    # shut off: qemu-nbd exports the images with the checkpoint's bitmap; nothing was written since
    rep, vault = run(vault, catalog, pol)
    (off,) = rep.sources
    assert off.status == "ok" and off.mode == "incremental" and off.bytes_read == 0, off
    assert off.consistency.startswith("shut off")
    assert vault.resolve(off.snapshot).meta["checkpoint"] == vault.resolve(inc2.snapshot).meta["checkpoint"]
    for t in ("vda", "vdb"):
        assert restored(vault, off.snapshot, t, tmp) == dom.raw(t), t
