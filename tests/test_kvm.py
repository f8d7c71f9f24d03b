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
from orchestrator.policy.model import load_policy
from orchestrator.restore.image import restore_image
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
    assert full.consistency == "crash-consistent (no guest agent channel configured)"
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


def test_added_disk_and_broken_chains_fall_back_to_full(env) -> None:  # type: ignore[no-untyped-def]
    vault, catalog, policy, tmp, domains = env
    dom = domains.create("dbs-app", {"vda": 16 * MiB})
    dom.write("vda", 0, 2 * MiB, 0x41)
    pol = policy(["dbs-*"])
    rep, vault = run(vault, catalog, pol)
    assert [s.status for s in rep.sources] == ["ok"]

    # a disk added since the last checkpoint: that disk is read in full, the other stays incremental
    dom.add_disk("vdb", 8 * MiB)  # restarts the domain; its checkpoints survive
    dom.write("vdb", MiB, MiB, 0x42)
    dom.write("vda", 4 * MiB, 65536, 0x43)
    rep, vault = run(vault, catalog, pol)
    (r,) = rep.sources
    assert r.status == "ok", r
    snap = vault.resolve(r.snapshot)
    assert snap.meta["capture_modes"] == {"vda": "incremental", "vdb": "full"}
    assert r.bytes_read == 65536 + MiB
    assert any("vdb was added" in w for w in r.warnings), r.warnings

    # checkpoint metadata gone (as after moving the domain to another host): full capture, warning
    cp = our_checkpoints(dom)[0]
    virsh("checkpoint-delete", dom.name, cp, "--metadata")
    dom.write("vda", 8 * MiB, 65536, 0x44)
    rep, vault = run(vault, catalog, pol)
    (r,) = rep.sources
    assert r.status == "ok" and any(f"checkpoint {cp} is gone" in w for w in r.warnings), r
    assert vault.resolve(r.snapshot).meta["capture_modes"] == {"vda": "full", "vdb": "full"}
    assert r.bytes_read == 2 * MiB + 2 * 65536 + MiB  # every allocated area, nothing more

    # the bitmap behind the checkpoint lost from the image (metadata still there): full, never a wrong incremental
    cp = our_checkpoints(dom)[0]
    virsh("destroy", dom.name)
    subprocess.run(["qemu-img", "bitmap", "--remove", dom.disks["vda"], cp], check=True)
    virsh("start", dom.name)
    dom.write("vda", 12 * MiB, 65536, 0x45)
    rep, vault = run(vault, catalog, pol)
    (r,) = rep.sources
    assert r.status == "ok" and any(f"checkpoint {cp} is unusable" in w for w in r.warnings), r
    assert vault.resolve(r.snapshot).meta["capture_modes"]["vda"] == "full"
    for t in ("vda", "vdb"):
        dom.flush(t)
        assert restored(vault, r.snapshot, t, tmp) == dom.raw(t), t
    assert len(our_checkpoints(dom)) == 1

    # and the chain continues incrementally from the new checkpoint
    dom.write("vdb", 0, 65536, 0x46)
    rep, vault = run(vault, catalog, pol)
    (r,) = rep.sources
    assert r.mode == "incremental" and r.bytes_read == 65536 and not r.warnings, r


def test_restore_vm_as_new_domain_that_starts(env, cli: Cli) -> None:  # type: ignore[no-untyped-def]
    vault, catalog, policy, tmp, domains = env
    dom = domains.create("dbs-erp", {"vda": 16 * MiB, "vdb": 8 * MiB})
    dom.write("vda", 0, MiB, 0x51)
    dom.write("vdb", 2 * MiB, 3 * MiB, 0x52)
    rep, vault = run(vault, catalog, policy(["dbs-erp"]))
    snap_id = rep.sources[0].snapshot
    for t in dom.disks:
        dom.flush(t)
    live = {t: dom.raw(t) for t in dom.disks}
    dom.write("vda", 0, MiB, 0x99)  # the original moves on; the restore must give the snapshot's content

    target = Path(domains.root) / "restored"
    domains.add("dbs-erp-copy")
    p = cli("restore", "vm", snap_id[:12], "--vault", str(vault.backend.location), "--as", "dbs-erp-copy",
            "--target-dir", str(target), "--start", "--json")
    res = json.loads(p.stdout)
    assert res["state"] == "running" and res["domain"] == "dbs-erp-copy"
    assert set(res["disks"]) == {"vda", "vdb"}
    assert virsh("domstate", "dbs-erp-copy").strip() == "running"
    assert res["uuid"] != virsh("domuuid", dom.name).strip()
    for t, path in res["disks"].items():
        assert path.endswith(".qcow2")
        out = tmp / f"check-{t}.raw"
        subprocess.run(["qemu-img", "convert", "-U", "-O", "raw", path, str(out)], check=True)
        assert out.read_bytes() == live[t], t
    xml = virsh("dumpxml", "dbs-erp-copy")
    assert str(target) in xml and dom.disks["vda"] not in xml

    # the name is taken now: refused before anything is written
    p = cli("restore", "vm", snap_id[:12], "--vault", str(vault.backend.location), "--as", "dbs-erp-copy",
            "--target-dir", str(tmp / "other"), check=False)
    assert p.returncode == 2 and "already exists" in p.stderr
    assert not (tmp / "other").exists()


def test_unknown_domain_stale_job_and_raw_disk(env) -> None:  # type: ignore[no-untyped-def]
    vault, catalog, policy, tmp, domains = env
    rep, vault = run(vault, catalog, policy(["no-such-vm"]))
    (r,) = rep.sources
    assert r.status == "failed" and "domain 'no-such-vm' not found on qemu:///system" in r.errors[0], r

    dom = domains.create("dbs-raw", {"vda": 8 * MiB}, fmt="raw")
    dom.write("vda", MiB, MiB, 0x61)
    pol = policy(["dbs-raw"], nbd_host="127.0.0.1", nbd_port=10899)  # NBD over TCP, as for remote hosts
    rep, vault = run(vault, catalog, pol)
    (r,) = rep.sources
    assert r.status == "ok", r
    assert any("vda is raw" in w for w in r.warnings)

    # a backup job left by a run that died (its pid file names a dead process): found, aborted, run succeeds
    from plugins.kvm import workdir
    from plugins.kvm.connection import connect
    from plugins.kvm.live import LiveJob

    conn = connect("qemu:///system")
    d = conn.lookupByName("dbs-raw")
    work = workdir.domain_dir(str(Path(domains.root) / "work"), d.UUIDString())
    from plugins.kvm.domxml import disks

    job = LiveJob(d, disks(d.XMLDesc(0)), work, ("127.0.0.1", 10899))
    job.begin("crashed", None, set(), quiesce=False)
    dead = subprocess.Popen(["true"])
    dead.wait()
    with open(os.path.join(work, "owner.pid"), "w") as f:
        f.write(str(dead.pid))
    dom.write("vda", 3 * MiB, MiB, 0x62)
    rep, vault = run(vault, catalog, pol)
    (r,) = rep.sources
    assert r.status == "ok", r
    assert any("left by an earlier interrupted run" in w for w in r.warnings), r.warnings
    dom.flush("vda")
    assert restored(vault, r.snapshot, "vda", tmp) == dom.raw("vda")


def test_guest_agent_that_does_not_answer_gives_crash_consistent_with_warning(env) -> None:  # type: ignore[no-untyped-def]
    vault, catalog, policy, _tmp, domains = env
    dom = domains.create("dbs-agent", {"vda": 8 * MiB}, agent_channel=True)
    dom.write("vda", 0, MiB, 0x71)
    rep, vault = run(vault, catalog, policy(["dbs-agent"]))
    (r,) = rep.sources
    assert r.status == "ok" and r.consistency == "crash-consistent", r
    assert any("guest filesystems not frozen" in w for w in r.warnings), r.warnings
    rep, vault = run(vault, catalog, policy(["dbs-agent"], quiesce=False))  # asked not to quiesce: no warning
    (r,) = rep.sources
    assert r.status == "ok" and not any("frozen" in w for w in r.warnings), r.warnings
