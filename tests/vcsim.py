"""govmomi's vSphere simulator for the vmware tests: built from Debian's packages (golang-go,
golang-github-vmware-govmomi-dev) with the project's additions in tests/vcsim-go (changeIds, QueryChangedDiskAreas,
a session check on /folder, read-failure injection), started on a loopback port, and helpers that make VMs and
write their disks the way a guest would (flat file + the CBT sidecar the simulator answers from)."""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import shutil
import signal
import ssl
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

HERE = Path(__file__).parent / "vcsim-go"
GOPATH = "/usr/share/gocode"
SIM_PKG = f"{GOPATH}/src/github.com/vmware/govmomi/simulator"
USER = "backup@vsphere.local"
CBT_WINDOW = 4 << 20  # answers cover 4 MiB: clients must loop, as with ESXi
CACHE = Path(os.environ.get("DOBAAS_TEST_CACHE", "/var/cache/dobaas-test")) / "vcsim"


def build() -> Path:
    """Compile once per source version (cold: ~25 s, 800 MB peak; cached afterwards)."""
    assert shutil.which("go"), "golang-go is missing (make test installs it)"
    assert os.path.isdir(SIM_PKG), "golang-github-vmware-govmomi-dev is missing (make test installs it)"
    sources = [HERE / "main.go", HERE / "simulator" / "dobaas_cbt.go"]
    digest = hashlib.sha256(b"".join(p.read_bytes() for p in sources)).hexdigest()[:16]
    binary = CACHE / f"vcsim-dobaas-{digest}"
    if binary.exists():
        return binary
    CACHE.mkdir(parents=True, exist_ok=True)
    overlay = CACHE / "overlay.json"
    overlay.write_text(json.dumps({"Replace": {f"{SIM_PKG}/dobaas_cbt.go": str(sources[1])}}))
    env = {**os.environ, "GOPATH": GOPATH, "GO111MODULE": "off", "GOPROXY": "off", "GOFLAGS": "",
           "GOCACHE": str(CACHE / "gocache"), "CGO_ENABLED": "0"}
    tmp = binary.with_suffix(".tmp")
    p = subprocess.run(["go", "build", "-overlay", str(overlay), "-o", str(tmp), "."], cwd=HERE, env=env,
                       capture_output=True, text=True, timeout=900)
    assert p.returncode == 0, f"building the vSphere simulator failed:\n{p.stderr[-3000:]}"
    tmp.rename(binary)
    return binary


@dataclass
class Sim:
    proc: subprocess.Popen
    host: str  # 127.0.0.1:PORT
    password: str
    datastore_dir: str
    model: str
    tmp: str
    ca_file: str  # the CA that signed the simulator's certificate

    @property
    def port(self) -> int:
        return int(self.host.rsplit(":", 1)[1])

    @property
    def der(self) -> bytes:
        ctx = ssl.create_default_context()
        ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
        import socket

        with socket.create_connection(("127.0.0.1", self.port)) as raw, ctx.wrap_socket(raw) as s:
            return s.getpeercert(binary_form=True) or b""

    @property
    def thumbprint(self) -> str:
        h = hashlib.sha256(self.der).hexdigest().upper()
        return ":".join(h[i : i + 2] for i in range(0, 64, 2))

    def connect(self) -> Any:
        from pyVim.connect import SmartConnect

        ctx = ssl.create_default_context()
        ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
        return SmartConnect(host="127.0.0.1", port=self.port, user=USER, pwd=self.password, sslContext=ctx)

    def source(self, vms: list[str], **extra: Any) -> dict:
        """A policy source for this simulator (password through the environment, certificate pinned)."""
        return {"name": "vms", "plugin": "vmware", "host": self.host, "user": USER,
                "password_env": "VCSIM_PASSWORD", "thumbprint": self.thumbprint, "vms": vms, **extra}


def make_certificates(tmp: str) -> tuple[str, str, str]:
    """A CA and a host certificate it signed for 127.0.0.1, as a company PKI would issue for vCenter."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.UTC)

    def cert(subject: str, key, issuer: str, issuer_key, ca: bool):  # type: ignore[no-untyped-def]
        b = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
             .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)])).public_key(key.public_key())
             .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(days=1))
             .not_valid_after(now + datetime.timedelta(days=30))
             .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
        if not ca:
            b = b.add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                                critical=False)
        return b.sign(issuer_key, hashes.SHA256())

    ca_key, host_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca = cert("Do'BaaS test CA", ca_key, "Do'BaaS test CA", ca_key, True)
    host = cert("127.0.0.1", host_key, "Do'BaaS test CA", ca_key, False)
    paths = tuple(os.path.join(tmp, n) for n in ("ca.pem", "host.pem", "host.key"))
    Path(paths[0]).write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    Path(paths[1]).write_bytes(host.public_bytes(serialization.Encoding.PEM))
    Path(paths[2]).write_bytes(host_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                      serialization.NoEncryption()))
    return paths  # type: ignore[return-value]


def start(model: str = "vpx", cbt_window: int = CBT_WINDOW, machines: int = 0) -> Sim:
    binary = build()
    password = secrets.token_hex(8)
    tmp = tempfile.mkdtemp(prefix=f"dobaas-vcsim-{model}-")
    ca, cert, key = make_certificates(tmp)
    env = {**os.environ, "DOBAAS_CBT_WINDOW": str(cbt_window), "TMPDIR": tmp}
    with open(os.path.join(tmp, "vcsim.log"), "w") as log_file:
        proc = subprocess.Popen([str(binary), "-model", model, "-user", USER, "-password", password,
                                 "-cert", cert, "-key", key, "-machines", str(machines)],
                                stdout=subprocess.PIPE, stderr=log_file, text=True, env=env)
    line = proc.stdout.readline() if proc.stdout else ""
    if not line:
        proc.wait(10)
        log = Path(tmp, "vcsim.log").read_text()[-2000:]
        raise AssertionError(f"the vSphere simulator did not start:\n{log}")
    info = json.loads(line)
    return Sim(proc, info["host"], password, info["datastore_dir"], model, tmp, ca)


def stop(sim: Sim) -> None:
    sim.proc.send_signal(signal.SIGTERM)
    try:
        sim.proc.wait(20)
    except subprocess.TimeoutExpired:
        sim.proc.kill()
    shutil.rmtree(sim.tmp, ignore_errors=True)


@pytest.fixture(scope="session")
def vcsim() -> Iterator[Sim]:
    s = start("vpx")
    yield s
    stop(s)


@pytest.fixture
def vcsim_env(vcsim: Sim, monkeypatch: pytest.MonkeyPatch) -> Sim:
    monkeypatch.setenv("VCSIM_PASSWORD", vcsim.password)
    return vcsim


class TestVm:
    """A VM made in the simulator, with disks the test writes like a guest would."""

    def __init__(self, sim: Sim, si: Any, ref: Any) -> None:
        self.sim, self.si, self.ref = sim, si, ref
        self.name = ref.name

    def disks(self) -> dict[str, tuple[int, str, int]]:
        """scsi0:N -> (device key, flat file path, capacity)."""
        from pyVmomi import vim

        devs = self.ref.config.hardware.device
        ctrl = {d.key: d for d in devs if isinstance(d, vim.vm.device.VirtualController)}
        out = {}
        for d in devs:
            if isinstance(d, vim.vm.device.VirtualDisk):
                _ds, path = d.backing.fileName[1:].split("] ", 1)
                flat = os.path.join(self.sim.datastore_dir, path[:-5] + "-flat.vmdk")
                out[f"scsi{ctrl[d.controllerKey].busNumber}:{d.unitNumber}"] = (d.key, flat, d.capacityInKB * 1024)
        return out

    def flat(self, disk: str) -> str:
        return self.disks()[disk][1]

    def write(self, disk: str, offset: int, data: bytes) -> None:
        """Write as the guest would, and record the change where the simulator's CBT reads it."""
        flat = self.flat(disk)
        with open(flat, "r+b") as f:
            f.seek(offset)
            f.write(data)
        side = Path(flat + ".cbt.json")
        sc = json.loads(side.read_text()) if side.exists() else {"epoch": "initial", "changes": []}
        sc["changes"].append([offset, len(data)])
        side.write_text(json.dumps(sc))

    def reset_cbt(self, disk: str) -> None:
        """What a CBT reset (or a storage vMotion) does: every earlier changeId becomes invalid."""
        side = Path(self.flat(disk) + ".cbt.json")
        sc = json.loads(side.read_text()) if side.exists() else {"changes": []}
        sc["epoch"] = secrets.token_hex(4)
        side.write_text(json.dumps(sc))

    def snapshot_names(self) -> list[str]:
        from pyVmomi import vmodl

        pc = vmodl.query.PropertyCollector  # never vm.snapshot: the simulator faults on reading it unset
        res = self.si.RetrieveContent().propertyCollector.RetrieveProperties([pc.FilterSpec(
            objectSet=[pc.ObjectSpec(obj=self.ref)], propSet=[pc.PropertySpec(type=type(self.ref),
                                                                             pathSet=["snapshot"])])])
        snap = next((p.val for p in res[0].propSet if p.name == "snapshot"), None) if res else None
        out: list[str] = []

        def walk(trees: list[Any]) -> None:
            for t in trees or []:
                out.append(t.name)
                walk(t.childSnapshotList)

        if snap is not None:
            walk(snap.rootSnapshotList)
        return out


def make_vm(sim: Sim, si: Any, name: str, disk_mib: list[int], datacenter: str | None = None) -> TestVm:
    """A VM with a paravirtual SCSI controller, the given disks (flat files sized to capacity, all zeros) and a NIC
    on "VM Network"."""
    from pyVim.task import WaitForTask
    from pyVmomi import vim

    content = si.RetrieveContent()
    dc = content.rootFolder.childEntity[0] if datacenter is None else \
        next(d for d in content.rootFolder.childEntity if d.name == datacenter)
    host = dc.hostFolder.childEntity[0]
    pool = host.resourcePool
    ds = host.datastore[0] if hasattr(host, "datastore") else dc.datastore[0]
    changes = [vim.vm.device.VirtualDeviceSpec(operation="add", device=vim.vm.device.ParaVirtualSCSIController(
        key=-100, busNumber=0, sharedBus="noSharing"))]
    for i, mib in enumerate(disk_mib):
        disk = vim.vm.device.VirtualDisk(key=-(200 + i), controllerKey=-100, unitNumber=i, capacityInKB=mib * 1024,
                                         backing=vim.vm.device.VirtualDisk.FlatVer2BackingInfo(
                                             fileName=f"[{ds.name}]", diskMode="persistent", thinProvisioned=True))
        changes.append(vim.vm.device.VirtualDeviceSpec(operation="add", fileOperation="create", device=disk))
    changes.append(vim.vm.device.VirtualDeviceSpec(operation="add", device=vim.vm.device.VirtualVmxnet3(
        key=-300, backing=vim.vm.device.VirtualEthernetCard.NetworkBackingInfo(deviceName="VM Network"))))
    spec = vim.vm.ConfigSpec(name=name, guestId="otherLinux64Guest", numCPUs=2, memoryMB=512,
                             files=vim.vm.FileInfo(vmPathName=f"[{ds.name}]"), deviceChange=changes)
    task = dc.vmFolder.CreateVM_Task(config=spec, pool=pool)
    WaitForTask(task)
    vm = TestVm(sim, si, task.info.result)
    for _key, flat, capacity in vm.disks().values():
        with open(flat, "r+b") as f:
            f.truncate(capacity)
    WaitForTask(vm.ref.PowerOnVM_Task())
    return vm
