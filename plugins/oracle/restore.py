"""Restore an Oracle snapshot as a new instance on a target host, to the end of the snapshot or to an SCN
inside it: the pieces are put in a staging directory there, then RMAN: STARTUP NOMOUNT with a parameter file
made from the snapshot (new SID), RESTORE CONTROLFILE FROM the autobackup, MOUNT, CATALOG the pieces, RESTORE
DATABASE, RECOVER UNTIL SCN, OPEN RESETLOGS, and RESTORE DATABASE VALIDATE. A SID that exists on the target is
refused before anything is copied; the source host only with ``in_place`` given on purpose."""

from __future__ import annotations

import shlex
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any, BinaryIO

from orchestrator.plugin.errors import UsageError
from plugins.oracle import rman
from plugins.oracle.config import SID
from plugins.oracle.remote import Host

WriteItem = Callable[[str, BinaryIO], int]


def options_from_command(raw: dict, meta: dict) -> dict:
    sid = raw.get("oracle_sid") or ""
    if not SID.match(sid):
        raise UsageError("--oracle-sid NEW: the new instance's SID (a letter, then up to 11 letters, digits or _)")
    if raw.get("to_time") and raw.get("to_scn"):
        raise UsageError("give --to-time or --to-scn, not both")
    to_time = None
    if raw.get("to_time"):
        try:
            to_time = datetime.strptime(raw["to_time"], "%Y-%m-%d %H:%M:%S").strftime("%Y-%m-%d %H:%M:%S")
        except ValueError:
            raise UsageError(f"--to-time {raw['to_time']!r}: expected 'YYYY-MM-DD HH:MM:SS' (the database "
                             "host's clock)") from None
    ssh = dict(meta["ssh"])
    for key in ("user", "identity_file", "known_hosts"):
        if raw.get(key):
            ssh[key] = raw[key]
    if raw.get("target_host"):
        host, _, port = raw["target_host"].partition(":")
        ssh["host"], ssh["port"] = host, int(port) if port else 22
    else:
        raise UsageError("--target-host HOST: where the new instance is made")
    home = raw.get("oracle_home") or meta["oracle_home"]
    staging = (raw.get("staging_dir") or meta["staging_dir"]).rstrip("/")
    for what, path in (("--oracle-home", home), ("--staging-dir", staging)):
        if not path.startswith("/") or "'" in path:
            raise UsageError(f"{what} {path!r}: an absolute path on the target, without quotes")
    return {"ssh": ssh, "sid": sid, "oracle_home": home, "staging_dir": staging,
            "to_scn": int(raw["to_scn"]) if raw.get("to_scn") else None, "to_time": to_time,
            "in_place": bool(raw.get("in_place"))}


def restore(meta: dict, items: list[str], write_item: WriteItem, raw: dict) -> dict:
    t0 = time.monotonic()
    opts = options_from_command(raw, meta)
    lo, hi = meta["scn_range"]["from"], meta["scn_range"]["to"]
    until = opts["to_scn"] if opts["to_scn"] is not None else hi
    if not lo <= until <= hi:
        raise UsageError(f"--to-scn {until} is outside what this snapshot covers: SCN {lo} to {hi}")
    t_lo, t_hi = (meta.get("time_range") or {}).get("from"), (meta.get("time_range") or {}).get("to")
    if opts["to_time"] and not (t_lo and t_hi and t_lo <= opts["to_time"] <= t_hi):
        raise UsageError(f"--to-time {opts['to_time']} is outside what this snapshot covers: {t_lo} to {t_hi} "
                         "(the database host's clock)")
    src = meta["ssh"]
    same = (opts["ssh"]["host"], opts["ssh"]["port"]) == (src["host"], src["port"])
    if same and not opts["in_place"]:
        raise UsageError(f"{src['host']} is the database the snapshot was taken from: restore to another "
                         "--target-host, or give --in-place on purpose")
    ssh = opts["ssh"]
    host = Host(ssh["host"], ssh["port"], ssh["user"], ssh["identity_file"], ssh["known_hosts"])
    sid, home = opts["sid"], opts["oracle_home"]
    work = f"{opts['staging_dir']}/dobaas-restore-{sid}"
    try:
        q = shlex.quote
        dbs = f"{home}/dbs"
        rc, _, _ = host.run(f"test -e {q(f'{dbs}/spfile{sid}.ora')} -o -e {q(f'{dbs}/init{sid}.ora')} "
                            f"|| grep -qs '^{sid}:' /etc/oratab")
        if rc == 0:
            raise UsageError(f"an instance {sid} already exists on {ssh['host']}: choose another --oracle-sid "
                             "(the restore never writes over an existing database)")
        host.check(f"rm -rf {q(work)} && mkdir -p {q(work + '/pieces')} {q(work + '/controlfile')}",
                   "preparing the staging directory")
        copied = 0
        for name in items:
            if name.startswith(("pieces/", "controlfile/")):
                copied += host.write_from(f"{work}/{name}", _chunks(write_item, name))
        pfile = f"{work}/init{sid}.ora"
        host.write_from(pfile, iter([(f"*.db_name='{meta['name']}'\n*.db_unique_name='{sid}'\n"
                                      f"*.control_files='{work}/control01.ctl'\n").encode()]))
        res = rman.run(host, home, sid, rman.restore(pfile, f"{work}/{meta['controlfile']}", f"{work}/pieces", until,
                                                     opts["to_time"]), "restore and recovery")
        check = rman.run(host, home, sid, rman.validate(), "RESTORE DATABASE VALIDATE")
        host.run(f"rm -rf {q(work)}")
    finally:
        host.close()
    return {"database": meta["name"], "dbid": meta["dbid"], "restored_as": sid, "server": ssh["host"],
            "until": opts["to_time"] or f"SCN {until}", "bytes_copied": copied,
            "seconds": round(time.monotonic() - t0, 3),
            "verified": "RESTORE DATABASE VALIDATE: " + ("complete" if "validation complete" in check.output
                                                         else "see the RMAN output"),
            "rman_output": res.output[-4000:]}


def _chunks(write_item: WriteItem, name: str) -> Iterator[bytes]:
    """An item's bytes as they come out of the vault (authenticated), without staging them locally."""
    import queue
    import threading

    q: queue.Queue[bytes | BaseException | None] = queue.Queue(maxsize=8)

    class Out:
        def write(self, b: Any) -> int:
            q.put(bytes(b))
            return len(b)

    def produce() -> None:
        try:
            write_item(name, Out())  # type: ignore[arg-type]
            q.put(None)
        except BaseException as e:
            q.put(e)

    t = threading.Thread(target=produce, daemon=True)
    t.start()
    while True:
        item = q.get()
        if item is None:
            break
        if isinstance(item, BaseException):
            raise item
        yield item
    t.join()
