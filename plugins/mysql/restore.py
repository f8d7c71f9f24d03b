"""Loading a logical snapshot into a running server under a new database name, optionally replaying the archived
binary logs up to a point in time, then checking the result against what was recorded at capture."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Callable
from typing import BinaryIO

from orchestrator.plugin.errors import DobaasError, IntegrityError, UsageError
from orchestrator.plugin.localtime import parse_local_time, show_local_time
from plugins.mysql import physical
from plugins.mysql.connection import Endpoint, connect, connector, explain
from plugins.mysql.dump import ident
from plugins.mysql.verify_datadir import physical_check

WriteItem = Callable[[str, BinaryIO], int]


def parse_position(text: str) -> tuple[str, int]:
    file, _, pos = text.rpartition(":")
    if not file or not pos.isdigit():
        raise UsageError(f"--to-position {text!r}: expected FILE:POS, e.g. main-bin.000003:1234")
    return file, int(pos)


def options_from_command(raw: dict) -> dict:
    """The command's values (``dobaas restore mysql``: strings as typed, None when absent) checked and turned
    into what ``restore`` uses: the core passes them through without knowing what a database server is."""
    if not raw.get("as_database") and not raw.get("target_datadir"):
        raise UsageError("give --as-database NEW (the restore never writes over an existing database), or "
                         "--target-datadir DIR for a physical snapshot")
    if raw.get("to_time") and raw.get("to_position"):
        raise UsageError("give --to-time or --to-position, not both")
    password_env = raw.get("password_env")
    if password_env and password_env not in os.environ:
        raise UsageError(f"--password-env names {password_env}, which is not set")
    try:
        port = int(raw.get("port") or 3306)
    except ValueError:
        raise UsageError(f"--port {raw.get('port')!r} is not a number") from None
    return {"endpoint": Endpoint(raw.get("host") or "127.0.0.1", port, raw.get("socket"), raw.get("user") or "root",
                                 os.environ[password_env] if password_env else None),
            "as_database": raw.get("as_database"), "database": raw.get("database"),
            "to_time": parse_local_time(raw["to_time"]) if raw.get("to_time") else None,
            "to_time_text": raw.get("to_time"),
            "to_position": parse_position(raw["to_position"]) if raw.get("to_position") else None,
            "target_datadir": raw.get("target_datadir"), "with_users": bool(raw.get("with_users")),
            "staging": raw.get("staging")}


def restore(meta: dict, items: list[str], write_item: WriteItem, options: dict) -> dict:
    if options.get("target_datadir"):
        if meta.get("mode") != "physical":
            raise UsageError("--target-datadir needs a physical (mariabackup) snapshot; this one is logical: "
                             "restore it with --as-database")
        if options.get("to_time") is not None or options.get("to_position") is not None:
            raise UsageError("point-in-time restore replays logs into a running server: use a logical snapshot")
        target = os.path.abspath(options["target_datadir"])
        res = physical.restore_datadir(meta["chain"], write_item, target, options.get("staging") or
                                       tempfile.gettempdir())
        return {**res, "until": "snapshot instant", **physical_check(target)}
    if meta.get("mode") == "physical":
        raise UsageError("this is a physical snapshot: restore it with --target-datadir DIR")
    ep: Endpoint = options["endpoint"]
    dbs = meta.get("databases", [])
    orig = options.get("database") or (dbs[0] if len(dbs) == 1 else None)
    if orig is None:
        raise UsageError(f"the snapshot holds databases {', '.join(dbs) or 'none'}: choose one with --database")
    if orig not in dbs:
        raise UsageError(f"the snapshot has no database {orig!r} (it has {', '.join(dbs)})")
    new = options["as_database"]
    to_time, to_pos = options.get("to_time"), options.get("to_position")
    base, replay = f"dump/{orig}.sql", None
    if to_time is not None or to_pos is not None:
        base, replay = _replay_plan(meta, items, orig, to_time, to_pos)

    conn = connect(ep, autocommit=True)
    try:
        cur = conn.cursor()
        cur.execute("SHOW DATABASES LIKE %s", (new,))
        if cur.fetchall():
            raise UsageError(f"database {new!r} already exists on {ep.describe()}; choose another --as-database")
        charset, collation = meta.get("charsets", {}).get(orig) or [None, None]
        cur.execute(f"CREATE DATABASE {ident(new)}" + (f" CHARACTER SET {charset}" if charset else "")
                    + (f" COLLATE {collation}" if collation else ""))
    except connector().Error as e:
        raise explain(e, ep) from None
    ok = False
    try:
        _pipe(["mariadb", *ep.client_args(), new], ep, lambda out: write_item(base, out),
              f"loading {base} into {new}")
        if replay:
            _replay(ep, orig, new, replay, write_item)
        result = _verify(conn, new, meta["tables"].get(orig, {}), exact=replay is None)
        if options.get("with_users"):
            if "users.sql" not in items:
                raise UsageError("the snapshot has no accounts (the source did not set users_and_grants: true)")
            _pipe(["mariadb", *ep.client_args()], ep, lambda out: write_item("users.sql", out),
                  "creating the accounts and grants")
            result["users"] = "accounts created where missing, grants applied"
        ok = True
    finally:
        if not ok:
            try:
                conn.cursor().execute(f"DROP DATABASE IF EXISTS {ident(new)}")
            except Exception:
                pass
        conn.close()
    return {"database": orig, "restored_as": new, "server": ep.describe(), "base": base,
            "replayed": replay["files"] if replay else [], "until": options.get("to_time_text") or
            (f"{to_pos[0]}:{to_pos[1]}" if to_pos else "snapshot instant"), **result}


def _replay_plan(meta: dict, items: list[str], orig: str, to_time: float | None,
                 to_pos: tuple[str, int] | None) -> tuple[str, dict]:
    prev = meta.get("previous")
    if not prev or f"previous/dump/{orig}.sql" not in items:
        raise UsageError("this snapshot has no archived binary logs (the first of its chain, or binary logging "
                         "off): restore it without --to-time/--to-position, or use a later snapshot")
    files = meta.get("binlog_files", [])
    start = prev["binlog"]
    if to_time is not None:
        if to_time >= meta["snapshot_time"]:
            raise UsageError("--to-time is at or after this snapshot's instant "
                             f"({show_local_time(meta['snapshot_time'])}): restore a later snapshot, or this one "
                             "without --to-time")
        if to_time < prev["time"]:
            raise UsageError("--to-time is before this snapshot's logs begin "
                             f"({show_local_time(prev['time'])}): restore an earlier snapshot")
        return f"previous/dump/{orig}.sql", {"files": files, "start": start["pos"], "stop": ["--stop-datetime=" +
                                                                                          show_local_time(to_time)]}
    assert to_pos is not None
    file, pos = to_pos
    if file not in files or (file == start["file"] and pos < start["pos"]):
        raise UsageError(f"--to-position {file}:{pos} is outside this snapshot's logs ({start['file']}:"
                         f"{start['pos']} to {meta['binlog']['file']}:{meta['binlog']['pos']})")
    return f"previous/dump/{orig}.sql", {"files": files[: files.index(file) + 1], "start": start["pos"],
                                         "stop": [f"--stop-position={pos}"]}


def _pipe(cmd: list[str], ep: Endpoint, produce: Callable[[BinaryIO], object], what: str) -> None:
    """Run a client with ``produce`` writing its standard input; fail with the client's own words."""
    p = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                         env={**os.environ, **ep.client_env()})
    err: list[bytes] = []
    t = threading.Thread(target=lambda: err.append(p.stderr.read() if p.stderr else b""), daemon=True)
    t.start()
    try:
        produce(p.stdin)  # type: ignore[arg-type]
    except BrokenPipeError:
        pass
    finally:
        try:
            p.stdin.close()  # type: ignore[union-attr]
        except BrokenPipeError:
            pass
    rc = p.wait()
    t.join()
    if rc != 0:
        msg = (err[0] if err else b"").decode(errors="replace").strip().splitlines()
        raise DobaasError(f"{what} failed: {msg[-1] if msg else f'exit {rc}'}")


def _replay(ep: Endpoint, orig: str, new: str, plan: dict, write_item: WriteItem) -> None:
    tmp = tempfile.mkdtemp(prefix="dobaas-binlogs-")
    try:
        paths = []
        for f in plan["files"]:
            path = os.path.join(tmp, f)
            with open(path, "wb") as out:
                write_item(f"binlog/{f}", out)
            paths.append(path)
        dec = subprocess.Popen(["mariadb-binlog", "--no-defaults", f"--start-position={plan['start']}",
                                *plan["stop"], f"--database={orig}", f"--rewrite-db={orig}->{new}", *paths],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)

        def copy(out: BinaryIO) -> None:
            assert dec.stdout is not None
            shutil.copyfileobj(dec.stdout, out, 1 << 20)

        _pipe(["mariadb", *ep.client_args(), new], ep, copy, f"replaying binary logs into {new}")
        if dec.wait() != 0:
            why = dec.stderr.read().decode().strip() if dec.stderr else ""
            raise DobaasError(f"decoding the binary logs failed: {why}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _verify(conn: object, new: str, recorded: dict, exact: bool) -> dict:
    """Row counts (and CHECKSUM TABLE when restoring the snapshot's own instant) against the capture's values."""
    cur = conn.cursor()  # type: ignore[attr-defined]
    rows, bad = {}, []
    for table, want in sorted(recorded.items()):
        cur.execute(f"SELECT COUNT(*) FROM {ident(new)}.{ident(table)}")
        n = cur.fetchall()[0][0]
        rows[table] = n
        if exact:
            cur.execute(f"CHECKSUM TABLE {ident(new)}.{ident(table)}")
            checksum = cur.fetchall()[0][1]
            if n != want["rows"] or checksum != want["checksum"]:
                bad.append(f"{table} (rows {n} vs {want['rows']}, checksum {checksum} vs {want['checksum']})")
    if bad:
        raise IntegrityError(f"restored database {new} differs from the snapshot: {'; '.join(bad)}")
    return {"tables": len(recorded), "rows": rows,
            "verified": "row counts and CHECKSUM TABLE equal the capture's" if exact else
            "rows replayed up to the requested point (checksums were recorded for the snapshot instant only)"}
