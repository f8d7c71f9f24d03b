"""A real libvirt + QEMU for the kvm tests: the daemons started without systemd, small TCG domains (no OS, they
sit in SeaBIOS), writes made through QEMU itself (HMP qemu-io) so the dirty bitmaps see them."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest

URI = "qemu:///system"
PKGS = ["libvirt-daemon-system", "libvirt-daemon-driver-qemu", "qemu-system-x86", "qemu-utils", "python3-libnbd"]


def virsh(*args: str, check: bool = True) -> str:
    p = subprocess.run(["virsh", "-c", URI, *args], capture_output=True, text=True, timeout=120)
    if check and p.returncode != 0:
        raise RuntimeError(f"virsh {' '.join(args)}: {p.stderr.strip()}")
    return p.stdout


def _pid(path: str) -> int | None:
    try:
        with open(path) as f:
            pid = int(f.read().strip())
        os.kill(pid, 0)
        return pid
    except (OSError, ValueError):
        return None


def fix_kvm_device() -> None:
    """What Debian's udev rule does on a real host (/dev/kvm group kvm, mode 0660) and containers without udev
    skip: otherwise libvirt finds KVM unusable for the QEMU user and re-probes QEMU (36 s) on every define."""
    import grp

    try:
        st = os.stat("/dev/kvm")
        gid = grp.getgrnam("kvm").gr_gid
    except (OSError, KeyError):
        return
    if st.st_gid != gid or st.st_mode & 0o060 != 0o060:
        os.chown("/dev/kvm", -1, gid)
        os.chmod("/dev/kvm", 0o660)


class Libvirt:
    """libvirtd + virtlogd; stopped afterwards only if this fixture started them."""

    def __init__(self) -> None:
        self.started: list[str] = []

    def start(self) -> None:
        fix_kvm_device()
        for daemon, pidfile in (("virtlogd", "/run/virtlogd.pid"), ("libvirtd", "/run/libvirtd.pid")):
            if _pid(pidfile) is None:
                subprocess.run([daemon, "-d"], check=True, timeout=60)
                self.started.append(pidfile)
        deadline = time.monotonic() + 60
        while subprocess.run(["virsh", "-c", URI, "version"], capture_output=True).returncode != 0:
            if time.monotonic() > deadline:
                raise RuntimeError("libvirtd did not answer within 60 s")
            time.sleep(0.2)

    def stop(self) -> None:
        for pidfile in reversed(self.started):
            pid = _pid(pidfile)
            if pid:
                os.kill(pid, 15)


@dataclass
class Domain:
    name: str
    dir: str
    disks: dict[str, str] = field(default_factory=dict)  # target -> image path

    def write(self, target: str, offset: int, length: int, pattern: int) -> None:
        """Write through QEMU (the guest's view), so the dirty bitmaps record it."""
        self.hmp(f'qemu-io -d {self._dev(target)} "write -P {pattern:#x} {offset} {length}"')

    def flush(self, target: str) -> None:
        self.hmp(f'qemu-io -d {self._dev(target)} "flush"')

    @staticmethod
    def _dev(target: str) -> str:
        """libvirt's alias of a virtio disk: virtio-disk<N>, N from the target letter (vda 0, vdb 1)."""
        return f"/machine/peripheral/virtio-disk{ord(target[-1]) - ord('a')}/virtio-backend"

    def add_disk(self, target: str, size: int) -> None:
        """Attach a new qcow2 disk to the persistent definition and restart the domain to plug it in."""
        path = os.path.join(self.dir, f"{target}.qcow2")
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", path, str(size)], check=True)
        virsh("attach-disk", self.name, path, target, "--driver", "qemu", "--subdriver", "qcow2", "--config")
        self.disks[target] = path
        virsh("destroy", self.name)
        virsh("start", self.name)

    def hmp(self, cmd: str) -> None:
        out = virsh("qemu-monitor-command", self.name, "--hmp", cmd).strip()
        if out:  # virsh exits 0 even when qemu-io fails: any reply is an error
            raise RuntimeError(f"{cmd}: {out}")

    def raw(self, target: str) -> bytes:
        """The disk's current content (domain writes flushed first when it runs)."""
        out = os.path.join(self.dir, f"live-{target}.raw")
        subprocess.run(["qemu-img", "convert", "-U", "-O", "raw", self.disks[target], out], check=True)
        with open(out, "rb") as f:
            data = f.read()
        os.unlink(out)
        return data


class Domains:
    """Creates domains and removes every one of them (with checkpoint metadata) afterwards."""

    def __init__(self) -> None:
        self.root = tempfile.mkdtemp(prefix="dobaas-kvm-", dir="/var/tmp")
        os.chmod(self.root, 0o755)  # QEMU (libvirt-qemu) must reach the images
        self.names: list[str] = []

    def create(self, name: str, disks: dict[str, int], start: bool = True, fmt: str = "qcow2",
               content: dict[str, str] | None = None, agent_channel: bool = False) -> Domain:
        """A domain with one image per target (``disks``: sizes); ``content`` gives raw files to start from;
        ``agent_channel``: a QEMU guest agent channel (no agent answers on it: there is no guest OS)."""
        d = Domain(name, os.path.join(self.root, name))
        os.makedirs(d.dir)
        os.chmod(d.dir, 0o755)
        xml_disks = ""
        for target, size in sorted(disks.items()):
            path = os.path.join(d.dir, f"{target}.{fmt}")
            if content and target in content:
                subprocess.run(["qemu-img", "convert", "-f", "raw", "-O", fmt, content[target], path], check=True)
            else:
                subprocess.run(["qemu-img", "create", "-q", "-f", fmt, path, str(size)], check=True)
            d.disks[target] = path
            xml_disks += (f"<disk type='file' device='disk'><driver name='qemu' type='{fmt}'/>"
                          f"<source file='{path}'/><target dev='{target}' bus='virtio'/></disk>")
        xml = (f"<domain type='qemu'><name>{name}</name><memory unit='MiB'>64</memory><vcpu>1</vcpu>"
               "<os><type arch='x86_64' machine='pc'>hvm</type></os><devices>"
               f"<emulator>/usr/bin/qemu-system-x86_64</emulator>{xml_disks}"
               + ("<channel type='unix'><target type='virtio' name='org.qemu.guest_agent.0'/></channel>"
                  if agent_channel else "") +
               "<memballoon model='none'/></devices></domain>")
        xml_path = os.path.join(d.dir, "domain.xml")
        with open(xml_path, "w") as f:
            f.write(xml)
        self.names.append(name)
        virsh("define", xml_path)
        if start:
            virsh("start", name)
        return d

    def add(self, name: str) -> None:
        """Track a domain created by the code under test (a restore) for clean-up."""
        self.names.append(name)

    def cleanup(self) -> None:
        for name in self.names:
            virsh("destroy", name, check=False)
            virsh("undefine", name, "--checkpoints-metadata", "--nvram", check=False)
        shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture(scope="session")
def libvirt_daemons() -> Iterator[Libvirt]:
    missing = [p for p in PKGS if subprocess.run(["dpkg-query", "-W", "-f=${Status}", p], capture_output=True,
                                                  text=True).stdout != "install ok installed"]
    if missing:
        pytest.fail(f"the kvm tests need {', '.join(missing)} (make test installs them)")
    lv = Libvirt()
    lv.start()
    yield lv
    lv.stop()


@pytest.fixture
def domains(libvirt_daemons: Libvirt) -> Iterator[Domains]:
    ds = Domains()
    yield ds
    ds.cleanup()
