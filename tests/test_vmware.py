"""VMware plugin against govmomi's vSphere simulator (built from Debian's packages, with changeIds and
QueryChangedDiskAreas added by tests/vcsim-go): CBT incrementals read exactly the changed areas, the backup
snapshot is always removed, orphans are cleaned, an invalid changeId means a full read, a restored VM's disks
equal the snapshot's, and bad credentials, untrusted certificates and unknown VMs give clear errors."""

from __future__ import annotations

import hashlib
import json
import os
import ssl
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
from tests.conftest import PASS, Cli, assert_one_line_error
from tests.vcsim import Sim, make_vm

pytestmark = pytest.mark.vmware

MiB = 2**20
BLOCK = 64 * 1024  # the vault's block size


@pytest.fixture
def env(tmp_path: Path, vcsim_env: Sim):  # type: ignore[no-untyped-def]
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


def test_full_then_incremental_reads_exactly_the_changed_areas(env, vcsim_env: Sim) -> None:
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


def lineage(vault: Vault, name: str) -> str:
    """The runner's lineage token of (vault, snapshot name): our snapshot on the VM is named after it."""
    return hashlib.blake2s(f"{vault.config.id}\0{name}".encode(), digest_size=6).hexdigest()


def test_snapshot_removed_when_a_read_fails_midway_and_next_run_succeeds(env, vcsim_env: Sim) -> None:
    vault, catalog, policy, tmp, si = env
    vm = make_vm(vcsim_env, si, "vm-fail", [16])
    vm.write("scsi0:0", 0, os.urandom(12 * MiB))
    fail = Path(vm.flat("scsi0:0") + ".fail-after")
    fail.write_text(str(6 * MiB))  # the datastore answers 503 from there on
    pol = policy(["vm-fail"])
    rep, vault = run(vault, catalog, pol)
    (src,) = rep.sources
    assert src.status == "failed"
    assert "HTTP 503" in " ".join(src.errors) and "offset" in " ".join(src.errors)
    assert vm.snapshot_names() == []
    assert vault.snapshot_ids() == []

    fail.unlink()
    rep, vault = run(vault, catalog, pol)
    (src,) = rep.sources
    assert src.status == "ok", src.errors
    assert restored(vault, src.snapshot, "scsi0:0", tmp) == Path(vm.flat("scsi0:0")).read_bytes()
    assert vm.snapshot_names() == []


def test_orphaned_backup_snapshot_is_removed(env, vcsim_env: Sim) -> None:
    from pyVim.task import WaitForTask

    vault, catalog, policy, _tmp, si = env
    vm = make_vm(vcsim_env, si, "vm-orphan", [8])
    vm.write("scsi0:0", MiB, os.urandom(MiB))
    # what a run killed between snapshot and removal leaves behind, plus a snapshot of another vault's policy
    WaitForTask(vm.ref.CreateSnapshot_Task(f"dobaas-backup-{lineage(vault, 'acme/vms/vm-orphan')}", "", False, False))
    rep, vault = run(vault, catalog, policy(["vm-orphan"]))
    (src,) = rep.sources
    assert src.status == "ok", src.errors
    assert any("left by an interrupted run" in w for w in src.warnings), src.warnings
    assert vm.snapshot_names() == []


def test_invalid_change_id_falls_back_to_a_full_read(env, vcsim_env: Sim) -> None:
    vault, catalog, policy, tmp, si = env
    vm = make_vm(vcsim_env, si, "vm-reset", [16, 8])
    vm.write("scsi0:0", 0, os.urandom(2 * MiB))
    vm.write("scsi0:1", 0, os.urandom(MiB))
    pol = policy(["vm-reset"])
    rep, vault = run(vault, catalog, pol)
    assert rep.sources[0].status == "ok"

    vm.write("scsi0:0", 10 * MiB, os.urandom(BLOCK))
    vm.write("scsi0:1", 4 * MiB, os.urandom(BLOCK))
    vm.reset_cbt("scsi0:0")  # e.g. a storage vMotion: the stored changeId no longer means anything
    rep, vault = run(vault, catalog, pol)
    (src,) = rep.sources
    assert src.status == "ok", src.errors
    assert any("scsi0:0" in w and "full read" in w for w in src.warnings), src.warnings
    snap = vault.resolve(src.snapshot)
    assert snap.meta["capture_modes"] == {"scsi0:0": "full", "scsi0:1": "incremental"}
    # scsi0:0 read in full (its allocated 2 MiB + 64 KiB), scsi0:1 only the changed block
    assert src.bytes_read == 2 * MiB + BLOCK + BLOCK
    for disk in ("scsi0:0", "scsi0:1"):
        assert restored(vault, src.snapshot, disk, tmp) == Path(vm.flat(disk)).read_bytes()

    vm.write("scsi0:0", 12 * MiB, os.urandom(BLOCK))  # and the chain continues incrementally
    rep, vault = run(vault, catalog, pol)
    assert rep.sources[0].bytes_read == BLOCK
    assert vault.resolve(rep.sources[0].snapshot).meta["capture_modes"]["scsi0:0"] == "incremental"


def test_restore_creates_a_vm_whose_disks_equal_the_snapshot(env, vcsim_env: Sim, cli: Cli) -> None:
    vault, catalog, policy, _tmp, si = env
    vm = make_vm(vcsim_env, si, "vm-src", [16, 8])
    vm.write("scsi0:0", 0, os.urandom(5 * MiB))
    vm.write("scsi0:1", 3 * MiB + 17, os.urandom(MiB))
    rep, vault = run(vault, catalog, policy(["vm-src"]))
    snap_id = rep.sources[0].snapshot
    original = {d: Path(vm.flat(d)).read_bytes() for d in ("scsi0:0", "scsi0:1")}
    vm.write("scsi0:0", 0, b"later change" * 1000)  # the live VM moves on; the restore is the snapshot

    p = cli("restore", "vm", snap_id, "--vault", str(vault.backend.location), "--as", "vm-restored",
            "--datastore", "LocalDS_0", "--start", "--json", timeout=300)

    res = json.loads(p.stdout)
    assert res["state"] == "powered on"
    assert set(res["disks"]) == {"scsi0:0", "scsi0:1"}
    from pyVmomi import vim

    new = si.RetrieveContent().searchIndex.FindByInventoryPath("DC0/vm/vm-restored")
    assert new is not None and new.runtime.powerState == "poweredOn"
    assert new.config.instanceUuid != vm.ref.config.instanceUuid
    assert new.config.hardware.numCPU == 2 and new.config.hardware.memoryMB == 512
    assert new.resourcePool == vm.ref.resourcePool  # by default where the original ran
    nics = [d for d in new.config.hardware.device if isinstance(d, vim.vm.device.VirtualEthernetCard)]
    assert len(nics) == 1 and not nics[0].connectable.startConnected
    from tests.vcsim import TestVm

    restored_vm = TestVm(vcsim_env, si, new)
    for disk, data in original.items():
        assert Path(restored_vm.flat(disk)).read_bytes() == data

    # the name is now taken: refused before any byte is written
    p = cli("restore", "vm", snap_id, "--vault", str(vault.backend.location), "--as", "vm-restored",
            check=False)
    assert_one_line_error(p, 2, "already exists")

    # reversibility: the export is an OVF package (stream-optimized VMDKs + descriptor) equal to the snapshot
    out = _tmp / "export"
    cli("export", snap_id, "--vault", str(vault.backend.location), "--output", str(out))
    import xml.etree.ElementTree as ET

    ovf = ET.parse(next(out.rglob("vm.ovf"))).getroot()
    ns = {"o": "http://schemas.dmtf.org/ovf/envelope/1"}
    hrefs = [f.get(f"{{{ns['o']}}}href") for f in ovf.findall("o:References/o:File", ns)]
    assert sorted(hrefs) == ["scsi0:0.vmdk", "scsi0:1.vmdk"]
    assert ovf.find("o:VirtualSystem/o:Name", ns).text == "vm-src"  # type: ignore[union-attr]
    for disk, data in original.items():
        (vmdk,) = out.rglob(f"{disk}.vmdk")
        info = json.loads(subprocess.run(["qemu-img", "info", "--output=json", str(vmdk)], capture_output=True,
                                         check=True).stdout)
        assert info["format-specific"]["data"]["create-type"] == "streamOptimized"
        raw = _tmp / f"{disk}.back"
        subprocess.run(["qemu-img", "convert", "-O", "raw", str(vmdk), str(raw)], check=True)
        assert raw.read_bytes()[: len(data)] == data


def test_wrong_password_untrusted_certificate_and_unknown_vm_are_clear_errors(env, vcsim_env: Sim, cli: Cli,
                                                                               monkeypatch) -> None:
    vault, catalog, policy, tmp, si = env
    make_vm(vcsim_env, si, "vm-known", [4])

    monkeypatch.setenv("VCSIM_PASSWORD", "not-the-password")
    rep, vault = run(vault, catalog, policy(["vm-known"]))
    assert rep.sources[0].status == "failed"
    assert "refused the login" in rep.sources[0].errors[0] and "wrong user name or password" in rep.sources[0].errors[0]
    monkeypatch.setenv("VCSIM_PASSWORD", vcsim_env.password)

    rep, vault = run(vault, catalog, policy(["vm-known"], thumbprint=None))
    err = rep.sources[0].errors[0]
    assert rep.sources[0].status == "failed" and "not trusted" in err and vcsim_env.thumbprint in err, err

    wrong = "AA:" * 31 + "AA"
    rep, vault = run(vault, catalog, policy(["vm-known"], thumbprint=wrong))
    err = rep.sources[0].errors[0]
    assert "not the pinned" in err and vcsim_env.thumbprint in err, err

    # the CA that signed the host's certificate is the other way to trust it (and a wrong CA is refused)
    rep, vault = run(vault, catalog, policy(["vm-known"], thumbprint=None, ca_file=vcsim_env.ca_file))
    assert rep.sources[0].status == "ok", rep.sources[0].errors
    other = tmp / "other-ca.pem"
    other.write_text(ssl.DER_cert_to_PEM_cert(vcsim_env.der))  # the host certificate itself is no CA
    rep, vault = run(vault, catalog, policy(["vm-known"], thumbprint=None, ca_file=str(other)))
    assert rep.sources[0].status == "failed" and "not trusted" in rep.sources[0].errors[0]

    rep, vault = run(vault, catalog, policy(["vm-known", "no-such-vm"]))
    err = rep.sources[0].errors[0]
    assert "'no-such-vm' not found" in err and "vm-known" in err, err

    pfile = tmp / "policy.yaml"
    pfile.write_text(yaml.safe_dump({"policy": "x", "client": "acme", "vault": str(tmp / "vault"),
                                     "sources": [vcsim_env.source(["a"], insecure=True)]}))
    p = cli("policy", "check", str(pfile), check=False)
    assert p.returncode == 6 and "policy.yaml:4: sources.0" in p.stderr and "insecure: true contradicts" in p.stderr


def test_standalone_esxi_host_backup_and_one_disk_restored_to_a_file(tmp_path: Path, cli: Cli,
                                                                      monkeypatch) -> None:
    from tests.vcsim import start, stop

    sim = start("esx")  # an ESXi host without vCenter: one datacenter (ha-datacenter), no folders of ours
    try:
        monkeypatch.setenv("VCSIM_PASSWORD", sim.password)
        si = sim.connect()
        vm = make_vm(sim, si, "esx-vm", [8])
        vm.write("scsi0:0", MiB + 3, os.urandom(2 * MiB))
        vault_dir = tmp_path / "vault"
        cli("vault", "init", str(vault_dir), "--kdf-cost", "12")
        pfile = tmp_path / "esx.yaml"
        pfile.write_text(yaml.safe_dump({"policy": "esx", "client": "acme", "vault": str(vault_dir),
                                         "sources": [sim.source(["ha-datacenter/vm/esx-*"], quiesce=False)]}))
        out = json.loads(cli("policy", "check", str(pfile), "--discover", "--json").stdout)
        assert "esx-vm" in json.dumps(out), out
        res = json.loads(cli("run", str(pfile), "--json", timeout=300).stdout)
        (src,) = res["sources"]
        assert src["status"] == "ok" and src["consistency"] == "crash-consistent (quiesce: false)", src
        assert src["source"] == "vms/esx-vm"
        # `policy check --discover` and `run` logged out of every session they opened (os._exit skips atexit)
        sm = si.content.sessionManager
        assert [x.key for x in sm.sessionList] == [sm.currentSession.key]
        out_file = tmp_path / "scsi0_0.raw"
        cli("restore", "image", src["snapshot"], "--vault", str(vault_dir), "--item", "scsi0:0",
            "--output", str(out_file))
        assert out_file.read_bytes() == Path(vm.flat("scsi0:0")).read_bytes()
        assert vm.snapshot_names() == []
    finally:
        stop(sim)


def test_quiesce_failure_gives_a_crash_consistent_backup_with_a_warning(env, vcsim_env: Sim) -> None:
    vault, catalog, policy, _tmp, si = env
    vm = make_vm(vcsim_env, si, "vm-notools", [4])
    vm.write("scsi0:0", 0, os.urandom(MiB))
    rep, vault = run(vault, catalog, policy(["vm-notools"]))
    assert rep.sources[0].consistency.startswith("quiesced"), rep.sources[0].consistency

    Path(vcsim_env.datastore_dir, "vm-notools", "quiesce.fail").touch()  # VMware Tools stop answering
    rep, vault = run(vault, catalog, policy(["vm-notools"]))
    (src,) = rep.sources
    assert src.status == "ok" and src.consistency == "crash-consistent", src.consistency
    assert any("quiescing the guest failed (ApplicationQuiesceFault" in w for w in src.warnings), src.warnings
    assert vm.snapshot_names() == []


def test_cbt_left_off_reads_whole_disks_and_excluded_disks_are_skipped(env, vcsim_env: Sim) -> None:
    vault, catalog, policy, _tmp, si = env
    vm = make_vm(vcsim_env, si, "vm-nocbt", [4, 2])
    vm.write("scsi0:0", 0, os.urandom(MiB))
    pol = policy(["vm-nocbt"], enable_cbt=False, exclude_disks=["vm-nocbt:scsi0:1"])
    for _ in range(2):
        rep, vault = run(vault, catalog, pol)
        (src,) = rep.sources
        assert src.status == "ok", src.errors
        assert any("changed-block tracking is off" in w for w in src.warnings), src.warnings
        assert src.bytes_read == 4 * MiB  # whole capacity: without CBT nothing says what is allocated
        snap = vault.resolve(src.snapshot)
        assert [i["name"] for i in snap.items] == ["scsi0:0"]
    assert vm.ref.config.changeTrackingEnabled is not True  # the VM was not reconfigured
