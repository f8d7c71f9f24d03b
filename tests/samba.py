"""A real Samba server on loopback for the shares tests (recipe: shared/notes/samba-smb.md)."""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

USER = "dobaas_smb"
PASSWORD = "Sm8-test-password"


@dataclass
class SambaServer:
    port: int
    share_dir: str
    share: str
    user: str
    password: str

    def url(self, path: str = "") -> str:
        return f"smb://127.0.0.1:{self.port}/{self.share}" + (f"/{path}" if path else "")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def share_folder(share_dir: str, prefix: str) -> tuple[str, str]:
    """A new folder of the share that the share's user may write in (a test's own corner of the share):
    its name (for the share's URL) and its path here."""
    import uuid

    name = f"{prefix}-{uuid.uuid4().hex[:8]}"
    path = os.path.join(share_dir, name)
    os.makedirs(path)
    os.chmod(path, 0o777)
    return name, path


@pytest.fixture(scope="session")
def samba() -> Iterator[SambaServer]:
    with run_samba() as server:
        yield server


@contextlib.contextmanager
def run_samba() -> Iterator[SambaServer]:
    """smbd on a free loopback port with one share and one user, stopped and removed on exit (the fixture, and
    the Hyper-V benchmark)."""
    for tool in ("smbd", "smbpasswd", "useradd"):
        assert shutil.which(tool), f"{tool} is missing: `make test` installs samba (apt-get install samba)"
    assert os.geteuid() == 0, "the Samba tests create a system user and must run as root (CI does)"
    assert glob.glob("/usr/lib/*/samba/vfs/streams_xattr.so"), \
        "Samba's streams_xattr module is missing: `make test` installs samba-vfs-modules"
    base = tempfile.mkdtemp(prefix="dobaas-smb-", dir="/srv" if os.path.isdir("/srv") else None)
    os.chmod(base, 0o755)
    share_dir = os.path.join(base, "compta")
    os.makedirs(share_dir)
    state = os.path.join(base, "state")
    for d in ("private", "lock", "state", "cache", "pid", "ncalrpc", "log"):
        os.makedirs(os.path.join(state, d))
    if subprocess.run(["id", USER], capture_output=True).returncode != 0:
        subprocess.run(["useradd", "-M", "-s", "/usr/sbin/nologin", USER], check=True)
    port = _free_port()
    conf = os.path.join(base, "smb.conf")
    with open(conf, "w") as f:
        f.write(f"""[global]
server role = standalone server
map to guest = never
interfaces = 127.0.0.1
bind interfaces only = yes
smb ports = {port}
disable netbios = yes
server min protocol = SMB2
private dir = {state}/private
lock directory = {state}/lock
state directory = {state}/state
cache directory = {state}/cache
pid directory = {state}/pid
ncalrpc dir = {state}/ncalrpc
log file = {state}/log/log.%m
passdb backend = tdbsam:{state}/private/passdb.tdb
usershare max shares = 0
load printers = no
printing = bsd
printcap name = /dev/null
disable spoolss = yes
[compta]
path = {share_dir}
read only = no
vfs objects = streams_xattr
""")
    subprocess.run(["smbpasswd", "-c", conf, "-s", "-a", USER], input=f"{PASSWORD}\n{PASSWORD}\n", text=True,
                   check=True, capture_output=True)
    shutil.chown(share_dir, USER, USER)
    logfile = os.path.join(state, "log", "smbd.out")
    with open(logfile, "w") as out:  # the child keeps its own copy of the descriptor
        proc = subprocess.Popen(["smbd", "--foreground", "--no-process-group", "--debug-stdout", "-d", "1", "-s",
                                 conf], stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + 20
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                with open(logfile) as f:
                    log = f.read()[-2000:]
                raise AssertionError(f"smbd did not start on port {port}:\n{log}") from None
            time.sleep(0.05)
    try:
        yield SambaServer(port, share_dir, "compta", USER, PASSWORD)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                os.killpg(proc.pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.1)
        else:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        shutil.rmtree(base, ignore_errors=True)
