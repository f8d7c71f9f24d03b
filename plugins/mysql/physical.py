"""Physical backups with mariabackup, on the database host: the data files streamed (xbstream) straight into the
vault, full or incremental from the previous snapshot's LSN. Each snapshot carries the items of its chain (full
+ incrementals, references only), so it restores on its own; the chain restarts with a full every
``full_every`` snapshots. Prepare happens at restore time."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field

from orchestrator.plugin.errors import DobaasError, StorageFull
from plugins.mysql.connection import Endpoint

READ = 1 << 20


@dataclass
class PhysicalRun:
    """One mariabackup --backup --stream run; fills ``info`` (LSNs, binlog position) when the stream ends."""

    ep: Endpoint
    datadir: str | None
    staging: str
    incremental_lsn: int | None = None
    info: dict = field(default_factory=dict)

    def stream(self) -> Iterator[bytes]:
        os.makedirs(self.staging, exist_ok=True)
        work = tempfile.mkdtemp(prefix="mariabackup-", dir=self.staging)
        cmd = ["mariabackup", "--no-defaults", "--backup", "--stream=xbstream", f"--target-dir={work}/target",
               f"--extra-lsndir={work}/lsn", f"--user={self.ep.user}"]
        cmd += [f"--socket={self.ep.socket}"] if self.ep.socket else [f"--host={self.ep.host}",
                                                                        f"--port={self.ep.port}"]
        if self.datadir:
            cmd.append(f"--datadir={self.datadir}")
        if self.incremental_lsn is not None:
            cmd.append(f"--incremental-lsn={self.incremental_lsn}")
        p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             env={**os.environ, **self.ep.client_env()})
        err: list[bytes] = []
        t = threading.Thread(target=lambda: err.append(p.stderr.read() if p.stderr else b""), daemon=True)
        t.start()
        ok = False
        try:
            assert p.stdout is not None
            while chunk := p.stdout.read(READ):
                yield chunk
            rc = p.wait()
            t.join()
            if rc != 0:
                raise _explain(err[0].decode(errors="replace") if err else "", self.staging)
            self.info = _read_info(os.path.join(work, "lsn"))
            ok = True
        finally:
            if not ok and p.poll() is None:
                p.kill()
                p.wait()
            shutil.rmtree(work, ignore_errors=True)


def _explain(stderr: str, staging: str) -> DobaasError:
    lines = [x for x in stderr.strip().splitlines() if x.strip()]
    last = next((x for x in reversed(lines) if "error" in x.lower()), lines[-1] if lines else "no output")
    if "No space left" in stderr:
        return StorageFull(f"staging directory {staging} is full during mariabackup")
    if "version" in stderr.lower() and ("unsupported" in stderr.lower() or "mismatch" in stderr.lower()):
        return DobaasError(f"mariabackup does not match the server's version: {last}")
    if "Access denied" in stderr or "privilege" in stderr.lower():
        return DobaasError(f"mariabackup was refused by the server (needs RELOAD, PROCESS, LOCK TABLES, "
                           f"BINLOG MONITOR): {last}")
    return DobaasError(f"mariabackup failed: {last}")


def _read_info(lsndir: str) -> dict:
    out: dict = {}
    try:
        with open(os.path.join(lsndir, "xtrabackup_checkpoints"), encoding="utf-8") as f:
            for line in f:
                k, _, v = line.partition("=")
                out[k.strip()] = v.strip()
        with open(os.path.join(lsndir, "xtrabackup_info"), encoding="utf-8") as f:
            info = f.read()
    except OSError as e:
        raise DobaasError(f"mariabackup left no checkpoint information ({e})") from None
    m = re.search(r"filename '([^']+)', position '(\d+)'(?:, GTID of the last change '([^']*)')?", info)
    if m:
        out["binlog"] = {"file": m.group(1), "pos": int(m.group(2)), "gtid": m.group(3) or ""}
    return {"backup_type": out.get("backup_type"), "from_lsn": int(out.get("from_lsn", 0)),
            "to_lsn": int(out.get("to_lsn", 0)), "binlog": out.get("binlog")}


def restore_datadir(items: list[str], write_item, target: str, staging: str) -> dict:
    """Extract the chain (full first), prepare, apply each incremental, copy back into ``target``."""
    if os.path.exists(target) and os.listdir(target):
        raise DobaasError(f"--target-datadir {target} is not empty (the restore never writes over data)")
    os.makedirs(staging, exist_ok=True)
    work = tempfile.mkdtemp(prefix="dobaas-physical-", dir=staging)
    try:
        dirs = []
        for i, name in enumerate(items):
            d = os.path.join(work, f"{i:03d}")
            os.makedirs(d)
            x = subprocess.Popen(["mbstream", "-x", "-C", d], stdin=subprocess.PIPE, stderr=subprocess.PIPE)
            try:
                write_item(name, x.stdin)
            finally:
                x.stdin.close()  # type: ignore[union-attr]
            if x.wait() != 0:
                raise DobaasError(f"extracting {name} failed: {x.stderr.read().decode().strip()[-300:]}")  # type: ignore[union-attr]
            dirs.append(d)
        _run(["mariabackup", "--no-defaults", "--prepare", f"--target-dir={dirs[0]}"], "preparing the full backup")
        for d in dirs[1:]:
            _run(["mariabackup", "--no-defaults", "--prepare", f"--target-dir={dirs[0]}", f"--incremental-dir={d}"],
                 f"applying incremental {os.path.basename(d)}")
        _run(["mariabackup", "--no-defaults", "--copy-back", f"--target-dir={dirs[0]}", f"--datadir={target}"],
             "copying the prepared files into the target data directory")
    except OSError as e:
        if e.errno == 28:
            raise StorageFull(f"no space left while restoring into {staging} or {target}") from None
        raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return {"target_datadir": target, "chain": items}


def _run(cmd: list[str], what: str) -> None:
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode != 0:
        if "No space left" in p.stderr:
            raise StorageFull(f"{what}: no space left on device")
        lines = [x for x in p.stderr.strip().splitlines() if x.strip()]
        raise DobaasError(f"{what} failed: {lines[-1] if lines else p.returncode}")
