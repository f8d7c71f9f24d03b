"""Test hosts for the Ansible collection: each is a real sshd running in a private mount namespace where /etc,
/opt, /srv, /var/lib and /root are overlays (upper dirs under the test's directory). A playbook that creates
users, writes units, creates virtualenvs and mounts volumes changes only that host's view; the machine is left
untouched. Needs root (CI runs as root); no systemd inside (the roles gate services on it)."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

OVERLAID = ("etc", "opt", "srv", "var/lib", "root")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class NamespaceHost:
    name: str
    base: Path
    port: int
    key: str  # root's private key for this host
    known_hosts: str
    proc: subprocess.Popen
    ns: str = ""  # the mount namespace (as /proc/PID/ns/mnt reads)

    def ssh(self, command: str, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess:
        """Run COMMAND as root on the host (inside its namespace)."""
        res = subprocess.run(
            ["ssh", "-i", self.key, "-p", str(self.port), "-o", f"UserKnownHostsFile={self.known_hosts}",
             "-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes", "root@127.0.0.1", command],
            capture_output=True, text=True, timeout=timeout)
        if check and res.returncode != 0:
            raise AssertionError(f"{self.name}: {command!r} exited {res.returncode}:\n{res.stdout}\n{res.stderr}")
        return res

    def read(self, path: str) -> str:
        return self.ssh(f"cat {path}").stdout

    def namespace_pids(self) -> list[int]:
        """Every process living in this host's mount namespace (the sshd, sessions, daemons it started)."""
        ns = self.ns
        if not ns:
            return []
        pids = []
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    if os.readlink(f"/proc/{entry}/ns/mnt") == ns:
                        pids.append(int(entry))
                except OSError:
                    pass
        return pids


def start_host(name: str, base: Path, key: str, known_hosts: str) -> NamespaceHost:
    """An sshd on a free loopback port, in a mount namespace of its own with the overlays in place."""
    assert os.geteuid() == 0, "the Ansible test hosts mount overlays: run the tests as root (CI does)"
    base.mkdir(parents=True)
    port = free_port()
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(base / "host_key")], check=True)
    host_pub = (base / "host_key.pub").read_text().split()
    with open(known_hosts, "a") as f:
        f.write(f"[127.0.0.1]:{port} {host_pub[0]} {host_pub[1]}\n")
    shutil.copy(key + ".pub", base / "authorized_keys")
    (base / "sshd_config").write_text(f"""Port {port}
ListenAddress 127.0.0.1
HostKey {base}/host_key
PidFile {base}/sshd.pid
AuthorizedKeysFile {base}/authorized_keys
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
Subsystem sftp internal-sftp
""")
    mounts = []
    for d in OVERLAID:
        flat = d.replace("/", "-")
        (base / "upper" / flat).mkdir(parents=True)
        (base / "work" / flat).mkdir(parents=True)
        mounts.append(f"mount -t overlay overlay -o lowerdir=/{d},upperdir={base}/upper/{flat},"
                      f"workdir={base}/work/{flat} /{d}")
    script = base / "boot.sh"
    script.write_text("#!/bin/sh\nset -e\n" + "\n".join(mounts)
                      + f"\nexec /usr/sbin/sshd -D -e -f {base}/sshd_config\n")
    os.makedirs("/run/sshd", mode=0o755, exist_ok=True)
    with open(base / "sshd.log", "w") as log:  # the child keeps its own descriptor
        proc = subprocess.Popen(["unshare", "--mount", "--propagation", "private", "sh", str(script)],
                                stdout=subprocess.DEVNULL, stderr=log)
    host = NamespaceHost(name, base, port, key, known_hosts, proc)
    deadline = time.monotonic() + 20
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as c:
                if c.recv(4).startswith(b"SSH"):
                    host.ns = os.readlink(f"/proc/{proc.pid}/ns/mnt")
                    return host
        except OSError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            stop_host(host)
            raise RuntimeError(f"test host {name} did not start: {(base / 'sshd.log').read_text()[-2000:]}")
        time.sleep(0.05)


def stop_host(host: NamespaceHost) -> None:
    """Stop everything in the host's namespace: its mounts (overlays, loop volumes) go with the last process."""
    for pid in host.namespace_pids():
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
    if host.proc.poll() is None:
        host.proc.kill()
    host.proc.wait(10)
    deadline = time.monotonic() + 10
    while host.namespace_pids() and time.monotonic() < deadline:
        time.sleep(0.1)
