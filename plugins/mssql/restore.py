"""Restore a SQL Server snapshot under a new database name, to the snapshot's last backup or to a point in time
(``--to-time``) or an LSN (``--to-lsn``) covered by its log chain: the files are put back on the share, then
``RESTORE DATABASE … WITH MOVE … NORECOVERY`` (full, then differential), ``RESTORE LOG … NORECOVERY [STOPAT]``,
``RECOVERY``, and ``DBCC CHECKDB`` on the new database. An existing name is refused before anything runs; a
point outside the chain names the range the snapshot covers."""

from __future__ import annotations

import ntpath
import time
from collections.abc import Callable
from datetime import datetime
from typing import BinaryIO

from orchestrator.plugin.errors import BadInput, DobaasError, UsageError
from orchestrator.plugin.localtime import parse_local_time, show_local_time
from orchestrator.plugin.secret import read_secret
from orchestrator.plugin.smb import SmbFiles
from plugins.mssql.connection import Connection, Server, quote_name, quote_str
from plugins.mssql.plugin import DATABASES

WriteItem = Callable[[str, BinaryIO], int]


def plan(chain: dict, to_time: float | None, to_lsn: int | None) -> tuple[list[dict], str]:
    """The backups to restore in order (full, maybe the differential, logs), the last log limited by the
    point asked for; and what the restore reaches, in words."""
    full, diff, logs = chain["full"], chain.get("diff"), chain.get("logs") or []
    if to_time is None and to_lsn is None:
        start = diff or full
        return [full, *([diff] if diff else []), *[lg for lg in logs if lg["last_lsn"] > start["last_lsn"]]], \
            "the last backup of the snapshot"
    last = logs[-1] if logs else (diff or full)
    if to_time is not None and not full["finished"] <= to_time <= last["finished"]:
        raise UsageError(f"--to-time {show_local_time(to_time)} is outside what this snapshot covers: from "
                         f"{show_local_time(full['finished'])} to {show_local_time(last['finished'])}")
    if to_lsn is not None and not full["last_lsn"] <= to_lsn <= last["last_lsn"]:
        raise UsageError(f"--to-lsn {to_lsn} is outside what this snapshot covers: LSN {full['last_lsn']} to "
                         f"{last['last_lsn']}")
    use_diff = diff is not None and (diff["finished"] <= to_time if to_time is not None
                                     else diff["last_lsn"] <= (to_lsn or 0))
    start = diff if use_diff and diff is not None else full
    steps = [full, *([diff] if use_diff else [])]
    for lg in logs:
        if lg["last_lsn"] <= start["last_lsn"]:
            continue
        steps.append(lg)
        if (to_time is not None and lg["finished"] >= to_time) or (to_lsn is not None and lg["last_lsn"] > to_lsn):
            break
    until = f"{show_local_time(to_time)}" if to_time is not None else f"LSN {to_lsn}"
    return steps, until


def restore(meta: dict, items: list[str], write_item: WriteItem, raw: dict) -> dict:
    t0 = time.monotonic()
    new = raw.get("as_database")
    if not new:
        raise UsageError("give --as-database NEW (the restore never writes over an existing database)")
    if raw.get("to_time") and raw.get("to_lsn"):
        raise UsageError("give --to-time or --to-lsn, not both")
    to_time = parse_local_time(raw["to_time"]) if raw.get("to_time") else None
    try:
        to_lsn = int(raw["to_lsn"]) if raw.get("to_lsn") else None
    except ValueError:
        raise UsageError(f"--to-lsn {raw['to_lsn']!r} is not a number") from None
    orig = meta["database"]
    if raw.get("database") and raw["database"] != orig:
        raise UsageError(f"this snapshot holds database {orig}, not {raw['database']}")
    steps, until = plan(meta["chain"], to_time, to_lsn)
    conn, files = _connect(meta, raw)
    placed: list[str] = []
    try:
        if any(r[0].lower() == new.lower() for r in conn.rows(DATABASES)):
            raise UsageError(f"{conn.server.host}: a database named {new} already exists; choose another name")
        unc = _place(meta, files, f"dobaas-restore\\{new}-{int(time.time())}", [st["item"] for st in steps],
                     write_item, placed)
        moves = _moves(conn, unc[steps[0]["item"]], new, raw)
        for i, step in enumerate(steps):
            last = i == len(steps) - 1
            stop = ""
            if last and to_time is not None and step["item"].endswith(".trn"):
                stop = f", STOPAT = N'{datetime.fromtimestamp(to_time).strftime('%Y-%m-%dT%H:%M:%S')}'"
            if last and to_lsn is not None and step["item"].endswith(".trn"):
                stop = f", STOPBEFOREMARK = N'lsn:{to_lsn}'"
            what = "LOG" if step["item"].endswith(".trn") else "DATABASE"
            with_ = (moves + ", " if i == 0 else "") + "NORECOVERY" + stop
            conn.execute(f"RESTORE {what} {quote_name(new)} FROM DISK = {quote_str(unc[step['item']])} WITH {with_}")
        conn.execute(f"RESTORE DATABASE {quote_name(new)} WITH RECOVERY")
        conn.execute(f"DBCC CHECKDB ({quote_str(new)}) WITH NO_INFOMSGS")
    finally:
        _remove(files, placed)
        conn.close()
    return {"database": orig, "restored_as": new, "server": f"{conn.server.host}:{conn.server.port}",
            "until": until, "backups_applied": [st["item"] for st in steps],
            "verified": "DBCC CHECKDB found no error", "seconds": round(time.monotonic() - t0, 3)}


def verify_backups(meta: dict, items: list[str], write_item: WriteItem) -> list[str]:
    """RESTORE VERIFYONLY … WITH CHECKSUM of every backup file of the snapshot, put back on the share for it."""
    conn, files = _connect(meta, {})
    placed: list[str] = []
    problems = []
    try:
        unc = _place(meta, files, f"dobaas-verify\\{meta['database']}-{int(time.time())}", items, write_item, placed)
        for item in items:
            try:
                conn.execute(f"RESTORE VERIFYONLY FROM DISK = {quote_str(unc[item])} WITH CHECKSUM")
            except DobaasError as e:
                problems.append(f"{item}: {e}")
    finally:
        _remove(files, placed)
        conn.close()
    return problems


def _connect(meta: dict, raw: dict) -> tuple[Connection, SmbFiles]:
    """The server (the snapshot's, or the one the technician names) and the share, with the policy's secrets
    unless overridden."""
    s = meta["server"]
    env = raw.get("password_env") or s.get("password_env")
    password = read_secret(env, None if raw.get("password_env") else s.get("password_file"),
                           f"SQL Server {s['host']}", "password")
    if password is None:
        raise BadInput("no password for the SQL Server login: give --password-env")
    conn = Connection(Server(raw.get("host") or s["host"], int(raw.get("port") or s["port"]),
                             raw.get("user") or s["user"], password))
    a = meta["share_access"]
    share_pw = read_secret(a.get("password_env"), a.get("password_file"), "share", "password")
    return conn, SmbFiles(a.get("user") or s["user"], share_pw if share_pw is not None else password)


def _place(meta: dict, files: SmbFiles, folder: str, items: list[str], write_item: WriteItem,
           placed: list[str]) -> dict[str, str]:
    """Stream items from the vault into a folder of the share; their names as SQL Server sees them."""
    unc = {}
    for item in items:
        url = f"{meta['share'].rstrip('/')}/{folder.replace(chr(92), '/')}/{item}"
        if not placed:
            files.makedirs(url.rsplit("/", 1)[0])
        out = files.open_write(url)
        placed.append(url)
        try:
            write_item(item, out)
        finally:
            out.close()
        unc[item] = f"{meta['share_path'].rstrip(chr(92))}\\{folder}\\{item}"
    return unc


def _remove(files: SmbFiles, placed: list[str]) -> None:
    for url in placed:
        try:
            files.remove(url)
        except Exception:
            pass
    files.close()


def _moves(conn: Connection, full_unc: str, new: str, raw: dict) -> str:
    """WITH MOVE for every file of the backup: into --data-dir / --log-dir, else beside the original's files,
    named after the new database."""
    out = []
    for logical, physical, kind, *_ in conn.rows(f"RESTORE FILELISTONLY FROM DISK = {quote_str(full_unc)}"):
        directory = (raw.get("log_dir") if kind == "L" else raw.get("data_dir")) or ntpath.dirname(physical)
        ext = ntpath.splitext(physical)[1] or (".ldf" if kind == "L" else ".mdf")
        suffix = "_log" if kind == "L" else ""
        out.append(f"MOVE {quote_str(logical)} TO {quote_str(ntpath.join(directory, new + suffix + ext))}")
    return ", ".join(out)

