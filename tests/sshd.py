"""A real OpenSSH server for the remote-vault tests, laid out as a provider's vault host: one chrooted SFTP-only
user per tenant, append-only (sftp-server request allowlist without remove/rename/setstat, files created 0444),
generated host and client keys, a free loopback port; started and stopped by the suite (no systemd)."""

from __future__ import annotations

import os
import pwd
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ALLOWED = "open,close,read,write,lstat,fstat,stat,opendir,readdir,realpath,fsync,statvfs,fstatvfs,limits"


@dataclass
class Tenant:
    user: str
    key: str  # private key file
    chroot: str  # provider-side path of the chroot; the repository is chroot/repo

    @property
    def repo(self) -> str:
        return os.path.join(self.chroot, "repo")


@dataclass
class Sshd:
    base: str
    port: int
    known_hosts: str
    host_pub: str
    tenants: dict[str, Tenant] = field(default_factory=dict)
    proc: subprocess.Popen | None = None

    def url(self, tenant: str) -> str:
        return f"sftp://{self.tenants[tenant].user}@127.0.0.1:{self.port}/repo"

    def env(self, tenant: str) -> dict[str, str]:
        """What a client needs to reach its vault from the CLI."""
        return {"DOBAAS_SFTP_KNOWN_HOSTS": self.known_hosts, "DOBAAS_SFTP_IDENTITY": self.tenants[tenant].key}

    def give_to(self, tenant: str) -> None:
        """The provider hands a freshly initialised repository to the tenant's user (directories writable by it,
        files read-only)."""
        t = self.tenants[tenant]
        uid = pwd.getpwnam(t.user).pw_uid
        for dirpath, _dirs, files in os.walk(t.repo):
            os.chown(dirpath, uid, uid)
            for f in files:
                os.chown(os.path.join(dirpath, f), uid, uid)

    def session_pids(self, tenant: str) -> list[int]:
        """The per-connection sshd processes of a tenant (``sshd: USER@notty``): killing one cuts its session."""
        out = subprocess.run(["pgrep", "-f", f"sshd: {self.tenants[tenant].user}@notty"], capture_output=True,
                             text=True).stdout
        return [int(x) for x in out.split()]


def _run(*cmd: str) -> None:
    subprocess.run(cmd, check=True, capture_output=True)


def start_sshd(tenants: list[str], unrestricted: tuple[str, ...] = ()) -> Sshd:
    """``unrestricted``: tenants chrooted but not append-only (for tools that need rename, like restic)."""
    assert os.geteuid() == 0, "the sshd fixture creates users and chroots: run the tests as root (CI does)"
    assert shutil.which("sshd") or os.path.exists("/usr/sbin/sshd"), "openssh-server is missing (make test installs it)"
    os.makedirs("/run/sshd", mode=0o755, exist_ok=True)
    os.makedirs("/srv", exist_ok=True)
    base = tempfile.mkdtemp(prefix="dobaas-sshd-", dir="/srv")  # chroot components must be root-owned, not /tmp
    os.chmod(base, 0o755)
    _run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", f"{base}/host_key")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    host_pub = Path(f"{base}/host_key.pub").read_text().split()
    known = f"{base}/known_hosts"
    with open(known, "w") as f:
        f.write(f"[127.0.0.1]:{port} {host_pub[0]} {host_pub[1]}\n")
    os.makedirs(f"{base}/auth")
    os.makedirs(f"{base}/chroot")
    sshd = Sshd(base, port, known, " ".join(host_pub[:2]))
    tag = secrets.token_hex(2)
    for name in tenants:
        user = f"dbs{tag}{name}"[:31]
        _run("useradd", "-M", "-s", "/usr/sbin/nologin", "-d", "/repo", user)
        _run("usermod", "-p", "*", user)
        _run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", f"{base}/{name}_key")
        shutil.copy(f"{base}/{name}_key.pub", f"{base}/auth/{user}")
        chroot = f"{base}/chroot/{user}"
        os.makedirs(f"{chroot}/repo")
        os.chmod(chroot, 0o755)
        sshd.tenants[name] = Tenant(user, f"{base}/{name}_key", chroot)
    users = " ".join(t.user for t in sshd.tenants.values())
    with open(f"{base}/sshd_config", "w") as f:
        f.write(f"""Port {port}
ListenAddress 127.0.0.1
HostKey {base}/host_key
PidFile {base}/sshd.pid
AuthorizedKeysFile {base}/auth/%u
StrictModes no
UsePAM no
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin no
AllowUsers {users}
Subsystem sftp internal-sftp
Match User {",".join(t.user for n, t in sshd.tenants.items() if n not in unrestricted) or "nobody"}
    ChrootDirectory {base}/chroot/%u
    ForceCommand internal-sftp -u 0222 -d /repo -p {ALLOWED}
    AllowTcpForwarding no
    X11Forwarding no
    PermitTTY no
""")
        if unrestricted:
            f.write(f"""Match User {",".join(sshd.tenants[n].user for n in unrestricted)}
    ChrootDirectory {base}/chroot/%u
    ForceCommand internal-sftp -d /repo
    AllowTcpForwarding no
    X11Forwarding no
    PermitTTY no
""")
    with open(f"{base}/sshd.log", "w") as log_file:
        sshd.proc = subprocess.Popen(["/usr/sbin/sshd", "-D", "-e", "-f", f"{base}/sshd_config"],
                                     stdout=subprocess.DEVNULL, stderr=log_file)
    deadline = time.monotonic() + 20
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as c:
                if c.recv(4).startswith(b"SSH"):
                    break
        except OSError:
            pass
        if sshd.proc.poll() is not None or time.monotonic() > deadline:
            log = Path(f"{base}/sshd.log").read_text()[-2000:]
            stop_sshd(sshd)
            raise RuntimeError(f"sshd did not start: {log}")
        time.sleep(0.05)
    return sshd


def stop_sshd(sshd: Sshd) -> None:
    if sshd.proc is not None and sshd.proc.poll() is None:
        sshd.proc.terminate()
        sshd.proc.wait(10)
    for t in sshd.tenants.values():
        subprocess.run(["pkill", "-KILL", "-u", t.user], capture_output=True)
        subprocess.run(["userdel", t.user], capture_output=True)
    for t in sshd.tenants.values():  # quota tests may have mounted a file system on a repository
        subprocess.run(["umount", t.repo], capture_output=True)
    shutil.rmtree(sshd.base, ignore_errors=True)


@pytest.fixture(scope="session")
def sshd() -> Iterator[Sshd]:
    s = start_sshd(["a", "b", "c"])
    yield s
    stop_sshd(s)
