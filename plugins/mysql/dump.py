"""A logical dump taken inside one ``START TRANSACTION WITH CONSISTENT SNAPSHOT``: every table of every selected
database, and the binary-log position and table checksums, are read at the same instant, with writers running
and no global lock. The SQL is generated row by row (nothing staged) and is independent of the database name,
so a database can be restored under another name."""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from orchestrator.plugin.errors import DobaasError
from plugins.mysql.connection import Endpoint, connect, connector, explain

SYSTEM_SCHEMAS = {"mysql", "information_schema", "performance_schema", "sys"}
NUMERIC = {"tinyint", "smallint", "mediumint", "int", "integer", "bigint", "decimal", "numeric", "float", "double",
           "real", "year"}
TEMPORAL = {"date", "datetime", "timestamp", "time"}
BATCH = 1 << 20  # bytes of VALUES per INSERT statement
HEADER = (b"/*!40101 SET NAMES utf8mb4 */;\nSET FOREIGN_KEY_CHECKS=0;\nSET UNIQUE_CHECKS=0;\n"
          b"SET SQL_MODE='NO_AUTO_VALUE_ON_ZERO,NO_ENGINE_SUBSTITUTION';\nSET TIME_ZONE='+00:00';\n")
DEFINER = re.compile(rb"\s*DEFINER\s*=\s*(`[^`]*`|'[^']*'|\S+)@(`[^`]*`|'[^']*'|\S+)", re.I)


def ident(name: str) -> str:
    return "`" + name.replace("`", "``") + "`"


@dataclass
class Coordinates:
    file: str
    pos: int
    gtid: str
    time: float  # server clock (epoch seconds) at the snapshot


@dataclass
class SnapshotDump:
    ep: Endpoint
    conn: Any = None
    coords: Coordinates | None = None
    #: {database: {table: {"rows": n, "checksum": c}}} read inside the snapshot
    tables: dict[str, dict[str, dict]] = field(default_factory=dict)

    def open(self, rotate_binlog: bool = False) -> str | None:
        """Start the snapshot. ``rotate_binlog``: FLUSH BINARY LOGS first, so the log this snapshot's position is
        in starts about there and the next run archives little that this one already has. Returns a warning."""
        warning = None
        self.conn = connect(self.ep)
        self.cur = self.conn.cursor(raw=True)
        if rotate_binlog:
            try:
                self.cur.execute("FLUSH BINARY LOGS")
            except connector().Error as e:
                warning = (f"binary log not rotated ({getattr(e, 'msg', e)}; needs RELOAD): each run archives the "
                           "current log from its beginning")
        self.sql("SET SESSION TIME_ZONE='+00:00'")
        self.sql("SET SESSION character_set_results = binary")  # column bytes as stored, whatever the charset
        self.sql("SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        self.sql("START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY")
        status: dict = dict(self.query("SHOW STATUS LIKE 'binlog_snapshot_%'"))  # type: ignore[arg-type]
        now = float(self.query("SELECT UNIX_TIMESTAMP(NOW(6))")[0][0] or 0)
        if status.get("Binlog_snapshot_file"):
            file, pos = status["Binlog_snapshot_file"], int(status["Binlog_snapshot_position"])
            gtid = self.query("SELECT BINLOG_GTID_POS(%s, %s)", (file, pos))[0][0] or ""
            self.coords = Coordinates(file, pos, gtid, now)
        else:
            self.coords = Coordinates("", 0, "", now)
        return warning

    def close(self) -> None:
        if self.conn is not None:
            try:
                self.conn.rollback()
                self.conn.close()
            except Exception:
                pass
            self.conn = None

    def sql(self, stmt: str, args: tuple | None = None) -> None:
        try:
            self.cur.execute(stmt, args)
            if self.cur.with_rows:
                self.cur.fetchall()
        except connector().Error as e:
            raise explain(e, self.ep) from None

    def query(self, stmt: str, args: tuple | None = None) -> list[tuple[str | None, ...]]:
        try:
            self.cur.execute(stmt, args)
            return [tuple(_text(v) for v in row) for row in self.cur.fetchall()]
        except connector().Error as e:
            raise explain(e, self.ep) from None

    def databases(self, patterns: list[str]) -> list[str]:
        names = [r[0] or "" for r in self.query("SHOW DATABASES")]
        if not patterns:
            return sorted(n for n in names if n not in SYSTEM_SCHEMAS)
        out: set[str] = set()
        for pat in patterns:
            hits = fnmatch.filter(names, pat)
            if not hits and not any(ch in pat for ch in "*?["):
                raise DobaasError(f"database {pat!r} does not exist on {self.ep.describe()}")
            out.update(hits)
        return sorted(out)

    def charsets(self, dbs: list[str]) -> dict[str, list[str | None]]:
        """Each database's default character set and collation (the restored database gets the same)."""
        rows = self.query("SELECT SCHEMA_NAME, DEFAULT_CHARACTER_SET_NAME, DEFAULT_COLLATION_NAME FROM "
                          "information_schema.SCHEMATA")
        return {r[0] or "": [r[1], r[2]] for r in rows if r[0] in dbs}

    def users(self) -> Iterator[bytes]:
        """Accounts and their grants as SQL (``CREATE USER IF NOT EXISTS`` + ``GRANT``), system accounts left
        out: applied at restore only on request, since they change who may log in to the target server."""
        yield b"-- dobaas: accounts and grants\n"
        rows = self.query("SELECT User, Host FROM mysql.user WHERE User NOT IN ('', 'root', 'mariadb.sys', "
                          "'mysql', 'PUBLIC') AND is_role = 'N' ORDER BY User, Host")
        for user, host in rows:
            account = f"'{(user or '').replace(chr(39), chr(39) * 2)}'@'{(host or '').replace(chr(39), chr(39) * 2)}'"
            create = self.query(f"SHOW CREATE USER {account}")[0][0] or ""
            yield create.replace("CREATE USER ", "CREATE USER IF NOT EXISTS ", 1).encode() + b";\n"
            for (grant,) in self.query(f"SHOW GRANTS FOR {account}"):
                yield (grant or "").encode() + b";\n"

    def record_checksums(self, db: str) -> None:
        """Row counts and CHECKSUM TABLE of every base table, in the snapshot (what a restore is checked against)."""
        out: dict[str, dict] = {}
        for name, kind in self.query(f"SHOW FULL TABLES FROM {ident(db)}"):
            if kind != "BASE TABLE":
                continue
            rows = int(self.query(f"SELECT COUNT(*) FROM {ident(db)}.{ident(name or '')}")[0][0] or 0)
            checksum = self.query(f"CHECKSUM TABLE {ident(db)}.{ident(name or '')}")[0][1]
            out[name or ""] = {"rows": rows, "checksum": None if checksum is None else int(checksum)}
        self.tables[db] = out

    def dump(self, db: str) -> Iterator[bytes]:
        """The database as SQL: tables, rows, views, routines, triggers, events (definers removed, names
        unqualified, so it restores under any database name)."""
        q = ident(db)
        yield b"-- dobaas logical dump of database " + q.encode() + b"\n" + HEADER
        listing = self.query(f"SHOW FULL TABLES FROM {q}")
        tables = sorted(n or "" for n, k in listing if k == "BASE TABLE")
        views = sorted(n or "" for n, k in listing if k == "VIEW")
        for t in tables:
            create = self.query(f"SHOW CREATE TABLE {q}.{ident(t)}")[0][1] or ""
            yield f"\n{create};\n".encode()
            yield from self._rows(db, t)
        for v in _view_order(db, views, {v: self.query(f"SHOW CREATE VIEW {q}.{ident(v)}")[0][1] or ""
                                         for v in views}):
            yield _portable(v.encode(), db) + b";\n"
        blocks = []
        for kind in ("PROCEDURE", "FUNCTION"):
            for row in self.query(f"SHOW {kind} STATUS WHERE Db = %s", (db,)):
                body = self.query(f"SHOW CREATE {kind} {q}.{ident(row[1] or '')}")[0][2]
                if body is None:
                    raise DobaasError(f"user {self.ep.user!r} cannot read the definition of {kind.lower()} "
                                      f"{db}.{row[1]} (needs SELECT on mysql.proc, or to be its definer)")
                blocks.append(body)
        for row in self.query(f"SHOW TRIGGERS FROM {q}"):
            blocks.append(self.query(f"SHOW CREATE TRIGGER {q}.{ident(row[0] or '')}")[0][2] or "")
        for row in self.query(f"SHOW EVENTS FROM {q}"):
            blocks.append(self.query(f"SHOW CREATE EVENT {q}.{ident(row[1] or '')}")[0][3] or "")
        if blocks:
            yield b"\nDELIMITER ;;\n" + b"".join(_portable(b.encode(), db) + b";;\n" for b in blocks) \
                + b"DELIMITER ;\n"

    def _rows(self, db: str, table: str) -> Iterator[bytes]:
        """INSERT statements of about BATCH bytes; each row's literal is built by the server (C speed)."""
        cols = self.query("SELECT COLUMN_NAME, DATA_TYPE, EXTRA FROM information_schema.COLUMNS WHERE "
                          "TABLE_SCHEMA = %s AND TABLE_NAME = %s ORDER BY ORDINAL_POSITION", (db, table))
        cols = [c for c in cols if "GENERATED" not in (c[2] or "").upper()]
        if not cols:
            return
        names = ", ".join(ident(c[0] or "") for c in cols)
        row_expr = "CONCAT('(', " + ", ',', ".join(_literal_expr(ident(c[0] or ""), (c[1] or "").lower())
                                                   for c in cols) + ", ')')"
        head = f"INSERT INTO {ident(table)} ({names}) VALUES\n".encode()
        cur = self.conn.cursor(raw=True, buffered=False)
        try:
            cur.execute(f"SELECT {row_expr} FROM {ident(db)}.{ident(table)}")
            batch: list[bytes] = []
            size = 0
            while rows := cur.fetchmany(2000):
                for (values,) in rows:
                    batch.append(bytes(values))
                    size += len(values)
                    if size >= BATCH:
                        yield head + b",\n".join(batch) + b";\n"
                        batch, size = [], 0
            if batch:
                yield head + b",\n".join(batch) + b";\n"
        except connector().Error as e:
            raise explain(e, self.ep) from None
        finally:
            cur.close()


def _text(v: Any) -> str | None:
    if v is None:
        return None
    return v.decode("utf-8", "surrogateescape") if isinstance(v, bytes | bytearray) else str(v)


def _literal_expr(col: str, kind: str) -> str:
    """SQL that renders a column as a literal surviving any character set: numbers as text, dates quoted, the
    rest as hexadecimal byte strings (exact bytes, nothing to escape)."""
    if kind in NUMERIC:
        return f"IFNULL({col}, 'NULL')"
    if kind == "bit":
        return f"IFNULL(CAST({col} AS UNSIGNED), 'NULL')"
    if kind in TEMPORAL:
        return f"IFNULL(QUOTE({col}), 'NULL')"
    return f"IF({col} IS NULL, 'NULL', CONCAT('X''', HEX({col}), ''''))"


def _portable(stmt: bytes, db: str) -> bytes:
    """No DEFINER (the account may not exist where it is restored) and no `db`. prefix (restore under any name)."""
    stmt = DEFINER.sub(b"", stmt, count=1)
    return stmt.replace(ident(db).encode() + b".", b"")


def _view_order(db: str, views: list[str], defs: dict[str, str]) -> list[str]:
    """Views after the views they select from."""
    done: list[str] = []
    pending = list(views)
    while pending:
        progress = False
        for v in list(pending):
            deps = [w for w in pending if w != v and ident(w) in defs[v]]
            if not deps:
                done.append(defs[v])
                pending.remove(v)
                progress = True
        if not progress:  # a cycle cannot exist in valid views; keep going rather than loop forever
            done.extend(defs[v] for v in pending)
            break
    return done
