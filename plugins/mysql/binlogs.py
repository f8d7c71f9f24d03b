"""Binary-log archiving: the logs written since the previous snapshot's position, fetched over the replication
protocol (``mariadb-binlog --read-from-remote-server --raw``: works against a remote server) into a staging
directory that holds one run's logs at most, then handed to the core one file at a time."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass

from orchestrator.plugin.errors import DobaasError, StorageFull
from plugins.mysql.connection import Endpoint


class BinlogPurged(DobaasError):
    """The log where the previous snapshot stopped is gone from the server: this interval cannot be replayed."""


@dataclass
class Fetched:
    dir: str
    files: list[str]  # in order, oldest first

    def cleanup(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)


def fetch(ep: Endpoint, first: str, last: str, last_pos: int, sizes: dict[str, int], staging: str) -> Fetched:
    """Fetch logs ``first`` .. ``last`` (``sizes``: SHOW BINARY LOGS, in order). Every closed log must arrive
    whole and the last one at least up to ``last_pos``: a short file (a full staging area) is an error, never a
    silently truncated archive."""
    available = list(sizes)
    if first not in available:
        raise BinlogPurged(f"binary log {first} (where the previous snapshot stopped) is no longer on the server "
                          "(purged?): point-in-time restore before this snapshot is not possible; the next "
                          "snapshots start a new chain")
    wanted = available[available.index(first) : available.index(last) + 1]
    os.makedirs(staging, exist_ok=True)
    out = tempfile.mkdtemp(prefix="binlogs-", dir=staging)
    cmd = ["mariadb-binlog", *ep.client_args(), "--read-from-remote-server", "--raw",
           f"--result-file={out}/", *wanted]
    p = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, **ep.client_env()})
    if p.returncode != 0:
        shutil.rmtree(out, ignore_errors=True)
        err = p.stderr.strip().splitlines()[-1] if p.stderr.strip() else f"exit {p.returncode}"
        st = os.statvfs(staging)
        if "No space left" in err or ("Could not write" in err and st.f_bavail * st.f_frsize < (1 << 20)):
            raise StorageFull(f"staging directory {staging} is full while fetching binary logs ({err})")
        if "privilege" in err.lower() or "denied" in err.lower():
            raise DobaasError(f"user {ep.user!r} cannot read binary logs (needs the REPLICATION SLAVE "
                              f"privilege): {err}")
        raise DobaasError(f"fetching binary logs {wanted[0]}..{wanted[-1]} failed: {err}")
    for f in wanted:
        path = os.path.join(out, f)
        got = os.path.getsize(path) if os.path.exists(path) else -1
        need = last_pos if f == last else sizes[f]
        if got < need or (f != last and got != need):
            shutil.rmtree(out, ignore_errors=True)
            st = os.statvfs(staging)
            if st.f_bavail * st.f_frsize < max(need, 1) - max(got, 0) + (1 << 20):
                raise StorageFull(f"staging directory {staging} is full: binary log {f} needs {need} bytes")
            raise DobaasError(f"binary log {f} arrived incomplete ({max(got, 0)} of {need} bytes)")
    return Fetched(out, wanted)
