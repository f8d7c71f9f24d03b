"""Hyper-V plugin against a strict WS-Man double (pywinrm unmodified, real NTLM over HTTPS with a pinned
certificate, the shell protocol in full, only the shipped scripts accepted) and a model host whose disks are
real VHDX files on the real Samba share, read by libvhdi over SMB."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from orchestrator.backup.runner import run_policy
from orchestrator.catalog.db import Catalog
from orchestrator.plugin.windows.channel import WindowsAccess, WinRmChannel
from orchestrator.plugin.windows.scripts import Script
from orchestrator.policy.model import load_policy
from orchestrator.restore.image import restore_image
from orchestrator.vault.backend.local import LocalBackend
from orchestrator.vault.repository import Vault
from tests.conftest import PASS, Cli
from tests.hyperv_model import RCT_GRANULE, HypervModel
from tests.samba import SambaServer
from tests.wsman import Double, start, unparsable_scripts

pytestmark = pytest.mark.hyperv
SCRIPTS = Path(__file__).resolve().parent.parent / "plugins" / "hyperv" / "scripts"
USER, PASSWORD = "ACME\\backup", "Hv-backup-pass-1"
MiB = 2**20


@pytest.fixture(scope="module")
def wsman() -> Iterator[Double]:
    double, stop = start({USER: PASSWORD}, [SCRIPTS])
    double.chunk = 700  # answers in several Receive rounds, as a busy host sends them
    yield double
    stop()


@pytest.fixture
def hv(wsman: Double, samba: SambaServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    model, folder = HypervModel.on_share(samba.share_dir, wsman)
    wsman.calls.clear()
    wsman.down, wsman.down_on, wsman.operation_timeouts = False, None, 0
    monkeypatch.setenv("HV_PASSWORD", PASSWORD)
    monkeypatch.setenv("HV_SMB_PASSWORD", samba.password)
    vault_dir = tmp_path / "vault"
    Vault.create(LocalBackend(str(vault_dir)), PASS, kdf_cost=12)

    def source(vms: list[str], **extra: object) -> dict:
        return {"name": "hv", "plugin": "hyperv", "host": "127.0.0.1", "port": wsman.port, "user": USER,
                "password_env": "HV_PASSWORD", "thumbprint": wsman.thumbprint, "vms": vms,
                "storage": {"D:\\VMs": samba.url(folder)}, "storage_user": samba.user,
                "storage_password_env": "HV_SMB_PASSWORD", **extra}

    def policy(vms: list[str], **extra: object):  # type: ignore[no-untyped-def]
        p = tmp_path / "hv.yaml"
        p.write_text(yaml.safe_dump({"policy": "hv", "client": "acme", "vault": str(vault_dir),
                                     "sources": [source(vms, **extra)]}))
        return load_policy(str(p)), p

    catalog = Catalog(f"sqlite:///{tmp_path / 'catalog.db'}")
    return model, policy, vault_dir, catalog, tmp_path


def _run(vault_dir: Path, catalog: Catalog, policy):  # type: ignore[no-untyped-def]
    return run_policy(policy, Vault.open(LocalBackend(str(vault_dir)), PASS), catalog)


def _restored(vault_dir: Path, sid: str, item: str, tmp: Path) -> bytes:
    v = Vault.open(LocalBackend(str(vault_dir)), PASS)
    out = tmp / f"r-{sid[:8]}-{item.replace(':', '_')}.raw"
    restore_image(v, v.resolve(sid).item(item), str(out))  # type: ignore[arg-type]
    data = out.read_bytes()
    out.unlink()
    return data


def test_shipped_scripts_parse_as_powershell() -> None:
    assert len(list(SCRIPTS.glob("*.ps1"))) >= 7 and unparsable_scripts(SCRIPTS) == []


def test_full_then_incremental_reads_only_what_rct_reports_and_restores_identically(hv, wsman: Double) -> None:
    model, policy, vault_dir, catalog, tmp = hv
    vm = model.add_vm("erp", [64, 16])
    model.guest_write(vm, 0, 0, os.urandom(3 * MiB))
    model.guest_write(vm, 0, 40 * MiB + 5, os.urandom(MiB))
    model.guest_write(vm, 1, 2 * MiB, os.urandom(512 * 1024))
    pol, _ = policy(["erp"])
    wsman.operation_timeouts = 2  # the first Receive rounds of a call answer "no output yet"
    (full,) = _run(vault_dir, catalog, pol).sources
    assert full.status == "ok", full.errors
    assert full.source == "hv/erp" and full.consistency.startswith("application-consistent")
    assert full.bytes_read == 80 * MiB  # whole disks; unallocated blocks are zeros read from no file data
    assert not model.vms[vm.id].checkpoints and len(model.reference_points) == 1
    # the night's writes: scattered, unaligned
    writes = [(0, 7 * MiB + 100, 10_000), (0, 50 * MiB, 200_000), (1, 1, 5), (1, 15 * MiB + 4000, 70_000)]
    for disk, off, n in writes:
        model.guest_write(vm, disk, off, os.urandom(n))
    (inc,) = _run(vault_dir, catalog, pol).sources
    assert inc.status == "ok" and inc.mode == "incremental", inc.errors
    granules = {(d, g) for d, off, n in writes for g in range(off // RCT_GRANULE, (off + n - 1) // RCT_GRANULE + 1)}
    assert inc.bytes_read == len(granules) * RCT_GRANULE  # exactly what RCT reported, no more
    assert len(model.reference_points) == 1, "the previous reference point of the chain is removed"
    for i, d in enumerate(vm.disks):
        assert _restored(vault_dir, inc.snapshot, f"scsi0:{i}", tmp) == model.raw(d.local, str(tmp / f"d{i}.raw"))
    names = [n for n, _p in wsman.calls]
    assert names.count("New-DobaasCheckpoint.ps1") == 2 and names.count("Get-DobaasDiskChanges.ps1") == 2


def test_rct_reset_means_a_full_read_with_a_warning(hv) -> None:
    model, policy, vault_dir, catalog, tmp = hv
    vm = model.add_vm("web-1", [16])
    model.guest_write(vm, 0, MiB, os.urandom(MiB))
    pol, _ = policy(["web-*"])
    assert _run(vault_dir, catalog, pol).sources[0].status == "ok"
    model.reset_rct(vm)  # the VM moved to another node
    model.guest_write(vm, 0, 5 * MiB, os.urandom(4096))
    (res,) = _run(vault_dir, catalog, pol).sources
    assert res.status == "ok" and res.bytes_read == 16 * MiB
    assert any("change tracking cannot answer" in w and "full read" in w for w in res.warnings), res.warnings
    assert _restored(vault_dir, res.snapshot, "scsi0:0", tmp) == model.raw(vm.disks[0].local, str(tmp / "x.raw"))
    (again,) = _run(vault_dir, catalog, pol).sources  # and the chain goes on from the new reference
    assert again.status == "ok" and again.bytes_read == 0


def test_two_vms_one_failing_and_crash_consistency_only_when_allowed(hv) -> None:
    model, policy, vault_dir, catalog, _tmp = hv
    model.add_vm("good", [8])
    bad = model.add_vm("novss", [8], vss_fails=True)
    pol, _ = policy(["good", "novss"])
    by = {s.source: s for s in _run(vault_dir, catalog, pol).sources}
    assert by["hv/good"].status == "ok"
    assert by["hv/novss"].status == "failed" and "could not quiesce" in by["hv/novss"].errors[0]
    assert not bad.checkpoints
    pol, _ = policy(["novss"], consistency="crash")
    (res,) = _run(vault_dir, catalog, pol).sources
    assert res.status == "ok" and res.consistency == "crash-consistent"
    assert any("crash-consistent checkpoint" in w for w in res.warnings)


def test_host_down_mid_capture_publishes_nothing_and_the_next_run_cleans_up(hv, wsman: Double) -> None:
    model, policy, vault_dir, catalog, _tmp = hv
    vm = model.add_vm("erp", [8])
    pol, _ = policy(["erp"])
    wsman.down_on = "Convert-DobaasCheckpoint.ps1"  # the host goes down once the data is read
    (res,) = _run(vault_dir, catalog, pol).sources
    assert res.status == "failed" and res.snapshot is None
    assert Vault.open(LocalBackend(str(vault_dir)), PASS).snapshot_ids() == []
    assert len(vm.checkpoints) == 1  # the host was down: its checkpoint stays until the next run
    wsman.down, wsman.down_on = False, None
    (res,) = _run(vault_dir, catalog, pol).sources
    assert res.status == "ok", res.errors
    assert any("left by an interrupted backup was removed" in w for w in res.warnings), res.warnings
    assert not vm.checkpoints


def test_restore_as_a_new_vm_identical_block_by_block(hv, cli: Cli) -> None:
    model, policy, vault_dir, _catalog, tmp = hv
    vm = model.add_vm("erp", [32, 8])
    model.guest_write(vm, 0, 0, os.urandom(2 * MiB))
    model.guest_write(vm, 1, 3 * MiB, os.urandom(MiB))
    _pol, pfile = policy(["erp"])
    env = Cli({"HV_PASSWORD": PASSWORD, "HV_SMB_PASSWORD": os.environ["HV_SMB_PASSWORD"]})
    src = json.loads(env("run", str(pfile), "--json").stdout)["sources"][0]
    assert src["status"] == "ok", src
    p = env("restore", "vm", src["snapshot"][:12], "--vault", str(vault_dir), "--as", "erp-restored",
            "--target-dir", "D:\\VMs\\Restore", "--start", "--json", check=False)
    assert p.returncode == 0, p.stderr
    res = json.loads(p.stdout)
    assert res["domain"] == "erp-restored" and res["state"] == "Running"
    new = next(v for v in model.vms.values() if v.name == "erp-restored")
    assert new.id != vm.id and new.switches == [""]  # new identity, adapters disconnected
    for i, d in enumerate(vm.disks):
        assert new.disks[i].host_path.startswith("D:\\VMs\\Restore\\")
        assert model.raw(new.disks[i].local, str(tmp / f"n{i}.raw")) == model.raw(d.local, str(tmp / f"o{i}.raw"))
    again = env("restore", "vm", src["snapshot"][:12], "--vault", str(vault_dir), "--as", "erp-restored",
                "--target-dir", "D:\\VMs\\Restore2", check=False)
    assert again.returncode == 2 and "already exists" in again.stderr

    # reversibility: dynamic VHDX disks equal to the originals, and the VM's settings
    out = tmp / "export"
    env("export", src["snapshot"], "--vault", str(vault_dir), "--output", str(out))
    vhdx = sorted(out.rglob("*.vhdx"))
    assert len(vhdx) == len(vm.disks)
    for i, (f, d) in enumerate(zip(vhdx, vm.disks, strict=True)):
        back = tmp / f"x{i}.raw"
        subprocess.run(["qemu-img", "convert", "-f", "vhdx", "-O", "raw", str(f), str(back)], check=True)
        original = model.raw(d.local, str(tmp / f"y{i}.raw"))
        assert back.read_bytes()[: len(original)] == original
    settings = json.loads(next(out.rglob("vm.json")).read_text())
    assert settings["vm"]["Name"] == "erp" and "New-VM" in (out / "README.txt").read_text()


def test_wrong_password_certificate_mismatch_unknown_vm_and_untaught_scripts(hv, wsman: Double,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    model, policy, vault_dir, catalog, tmp = hv
    model.add_vm("erp", [8])
    monkeypatch.setenv("HV_PASSWORD", "wrong")
    (res,) = _run(vault_dir, catalog, policy(["erp"])[0]).sources
    assert res.status == "failed" and "credentials of ACME\\backup were rejected" in res.errors[0]
    monkeypatch.setenv("HV_PASSWORD", PASSWORD)
    (res,) = _run(vault_dir, catalog, policy(["erp"], thumbprint="ab" * 32)[0]).sources
    assert res.status == "failed" and "certificate mismatch" in res.errors[0] and "nothing was sent" in res.errors[0]
    (res,) = _run(vault_dir, catalog, policy(["erp"], thumbprint=None, ca_file=wsman.ca_file)[0]).sources
    assert res.status == "ok", res.errors  # trust through a CA file instead of a pin
    from tests.wsman import _certificate

    (tmp / "other").mkdir()
    _key, other_ca, _thumb = _certificate(str(tmp / "other"))  # a CA that did not sign the host's certificate
    (res,) = _run(vault_dir, catalog, policy(["erp"], thumbprint=None, ca_file=other_ca)[0]).sources
    assert res.status == "failed" and "not trusted by" in res.errors[0], res.errors
    (res,) = _run(vault_dir, catalog, policy(["nosuchvm"])[0]).sources
    assert res.status == "failed" and "no VM named nosuchvm" in res.errors[0]
    channel = WinRmChannel(WindowsAccess("127.0.0.1", USER, PASSWORD, port=wsman.port, thumbprint=wsman.thumbprint))
    tampered = Script("Get-DobaasVm.ps1", (SCRIPTS / "Get-DobaasVm.ps1").read_text() + "\nRemove-Item C:\\ -Recurse")
    with pytest.raises(Exception, match="not a script this double was taught"):
        channel.run(tampered)
    closed = WinRmChannel(WindowsAccess("127.0.0.1", USER, PASSWORD, port=1, thumbprint=wsman.thumbprint))
    with pytest.raises(Exception, match="WinRM is not listening"):
        closed.run(Script.load("plugins.hyperv", "Get-DobaasVm.ps1"))


def test_a_differencing_chain_is_read_through_its_parents(hv) -> None:
    """A VM with a user checkpoint runs on a differencing disk (.avhdx) whose unchanged blocks are in its parent:
    the backup reads the chain, over SMB, and the snapshot holds the disk as the VM sees it."""
    import pyvhdi

    from tests.hyperv_model import Disk
    from tests.vhdx_diff import BLOCK, write_child

    model, policy, vault_dir, catalog, tmp = hv
    vm = model.add_vm("legacy", [8])
    model.guest_write(vm, 0, 0, os.urandom(8 * MiB))
    base = vm.disks[0]
    parent = pyvhdi.file()
    parent.open(base.local)
    linkage = "{" + str(parent.identifier) + "}"
    parent.close()
    child_host = base.host_path.replace(".vhdx", "_5F2A.avhdx")
    changed = os.urandom(BLOCK)
    write_child(model.local(child_host), base.size, linkage, {"absolute_win32_path": base.host_path}, {2: changed})
    vm.disks[0] = Disk(child_host, model.local(child_host), base.size)
    (res,) = _run(vault_dir, catalog, policy(["legacy"])[0]).sources
    assert res.status == "ok", res.errors
    expected = bytearray(model.raw(base.local, str(tmp / "base.raw")))
    expected[2 * BLOCK : 3 * BLOCK] = changed
    assert _restored(vault_dir, res.snapshot, "scsi0:0", tmp) == bytes(expected)


def test_plain_http_only_with_every_message_sealed(hv, wsman: Double) -> None:
    """``https: false``: WinRM over HTTP, where the double (as WinRM with AllowUnencrypted=false) refuses any
    message that is not NTLM-sealed; the backup goes through with every message sealed."""
    model, policy, vault_dir, catalog, _tmp = hv
    model.add_vm("erp", [8])
    http, stop = start({USER: PASSWORD}, [SCRIPTS], tls=False)
    http.handlers = model.handlers()
    try:
        pol, _ = policy(["erp"], https=False, port=http.port, thumbprint=None)
        (res,) = _run(vault_dir, catalog, pol).sources
    finally:
        stop()
    assert res.status == "ok", res.errors
    assert http.sealed_messages >= 10 and not http.faults
