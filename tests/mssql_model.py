"""A model SQL Server instance behind a strict TDS double (pysqlbridge's server layer, real pymssql/FreeTDS on the
wire, real login checks): databases with recovery models and LSNs that transactions advance, msdb's backup
history, BACKUP writing files to the real Samba share's directory, RESTORE enforcing the chain rules with SQL
Server's error numbers and messages, STOPAT, DBCC CHECKDB. Any statement it does not model fails with error 102.

Backup files use a documented synthetic format (not SQL Server's MTF): a first line ``DOBAAS-MSSQL-MODEL 1``, a
JSON header line (database, type D/I/L, first_lsn, last_lsn, checkpoint_lsn, database_backup_lsn,
differential_base_lsn, start and finish times, logical file names), the payload (JSON: the rows for D and I, the
log records for L, plus filler standing for data pages), and a last line ``sha256 <hex of everything before>``:
what RESTORE checks (error 3189 when it does not match).
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from pysqlbridge.logins import Login, LoginStore
from pysqlbridge.server import BridgeServer
from pysqlbridge.tds.result import Column, Integer, NVarChar, Query, QueryError, QueryResult

MAGIC = b"DOBAAS-MSSQL-MODEL 1\n"


def err(number: int, message: str, severity: int = 16) -> QueryError:
    return QueryError(message, number=number, severity=severity)


@dataclass
class Database:
    name: str
    recovery: str = "FULL"
    state: str = "ONLINE"
    rows: list[list[Any]] = field(default_factory=list)  # [id, value, time]
    lsn: int = 1_000_000
    log: list[tuple[int, float, list[Any]]] = field(default_factory=list)  # (lsn, time, row inserted)
    diff_base: int | None = None  # checkpoint LSN of the last (non copy-only) full
    log_from: int | None = None  # first LSN of the next log backup
    pages: int = 64  # filler KiB standing for the data pages of a backup
    restoring: dict | None = None  # a database being restored: {"base", "at", "stopped"}


@dataclass
class Instance:
    share_path: str  # what SQL Server is told: \\proxy\sqlbackup
    share_dir: str  # where that share's files are, on this machine (the Samba share's folder)
    databases: dict[str, Database] = field(default_factory=dict)
    backupset: list[dict] = field(default_factory=list)
    can_backup: bool = True
    share_writable: bool = True
    share_full: bool = False  # the share's disk fills up during the next backup
    cut_next: bool = False  # the next backup stops half-way (service restarted, connection lost)
    lock: threading.Lock = field(default_factory=threading.Lock)
    statements: list[str] = field(default_factory=list)
    clock: float = field(default_factory=lambda: float(int(time.time()) - 86400))  # whole seconds, like STOPAT
    port: int = 0

    # ---- the world ---------------------------------------------------------------------------------------
    def add(self, name: str, recovery: str = "FULL") -> Database:
        db = Database(name, recovery)
        self.databases[name.lower()] = db
        return db

    def tick(self, seconds: float = 60) -> float:
        self.clock += seconds
        return self.clock

    def insert(self, db: Database, value: str) -> float:
        """A committed transaction: one row, a log record, the LSN advances."""
        t = self.tick()
        db.lsn += 10
        row = [len(db.rows) + 1, value, t]
        db.rows.append(row)
        db.log.append((db.lsn, t, row))
        return t

    def local(self, path: str) -> str:
        if not path.lower().startswith(self.share_path.lower() + "\\"):
            raise err(3201, f"Cannot open backup device '{path}'. Operating system error 3(The system cannot find "
                            "the path specified.).")
        return os.path.join(self.share_dir, *path[len(self.share_path) + 1 :].split("\\"))

    # ---- BACKUP --------------------------------------------------------------------------------------------
    def backup(self, name: str, kind: str, path: str, options: set[str], by: str = "dobaas") -> None:
        db = self._db(name)
        if not self.can_backup and by == "dobaas":
            raise err(262, f"BACKUP DATABASE permission denied in database '{db.name}'.", 14)
        if db.state != "ONLINE":
            raise err(942, f"Database '{db.name}' cannot be opened because it is offline.", 14)
        copy_only = "COPY_ONLY" in options
        t0 = self.tick(5)
        if kind == "L":
            if db.recovery == "SIMPLE":
                raise err(4208, "The statement BACKUP LOG is not allowed while the recovery model is SIMPLE. Use "
                                "BACKUP DATABASE or change the recovery model using ALTER DATABASE.")
            if db.diff_base is None:
                raise err(4214, "BACKUP LOG cannot be performed because there is no current database backup.")
        if kind == "I" and db.diff_base is None:
            raise err(3035, f"Cannot perform a differential backup for database \"{db.name}\", because a current "
                            "database backup does not exist.")
        db.lsn += 1
        first = db.log_from if kind == "L" else db.lsn
        header = {"database": db.name, "type": kind, "first_lsn": first, "last_lsn": db.lsn + 1,
                  "checkpoint_lsn": db.lsn, "database_backup_lsn": db.diff_base or 0,
                  "differential_base_lsn": db.diff_base if kind == "I" else None, "start": t0, "finish": t0 + 1,
                  "files": [[db.name, "D"], [db.name + "_log", "L"]], "copy_only": copy_only}
        if kind == "L":
            payload: Any = [[lsn, t, row] for lsn, t, row in db.log if first < lsn <= db.lsn]
        else:
            payload = db.rows
        # the data pages: the same for every full of a database but for the rows (as real data pages mostly are)
        pages = random.Random(db.name).randbytes(db.pages * 1024) if kind == "D" else b""
        body = MAGIC + json.dumps(header).encode() + b"\n" + json.dumps(payload).encode() + b"\n" + pages + b"\n"
        local = self.local(path)
        if not self.share_writable:
            raise err(3201, f"Cannot open backup device '{path}'. Operating system error 5(Access is denied.).")
        os.makedirs(os.path.dirname(local), exist_ok=True)
        os.chmod(os.path.dirname(local), 0o777)  # dobaas removes the file over SMB once it is in the vault
        with open(local, "wb") as f:
            f.write(body + b"sha256 " + hashlib.sha256(body).hexdigest().encode() + b"\n")
        os.chmod(local, 0o666)
        if self.share_full or self.cut_next:  # half a file stays behind, as SQL Server leaves it
            with open(local, "r+b") as f:
                f.truncate(len(body) // 2)
            if self.share_full:
                raise QueryError(f"Write on \"{path}\" failed: 112(There is not enough space on the disk.)",
                                 number=3202, severity=16,
                                 following=(err(3013, "BACKUP DATABASE is terminating abnormally."),))
            self.cut_next = False
            raise err(3013, "BACKUP DATABASE is terminating abnormally.")
        if kind == "D" and not copy_only:
            db.diff_base = header["checkpoint_lsn"]
            db.log_from = db.log_from if db.log_from is not None else first
        if kind == "L" and not copy_only:
            db.log_from = header["last_lsn"]
        if db.log_from is None and kind == "D":
            db.log_from = first
        db.lsn += 1
        self.backupset.append({"backup_set_id": len(self.backupset) + 1, "database_name": db.name, "type": kind,
                               "is_copy_only": int(copy_only), **{k: header[k] for k in (
                                   "first_lsn", "last_lsn", "checkpoint_lsn", "database_backup_lsn")},
                               "differential_base_lsn": header["differential_base_lsn"],
                               "backup_start_date": t0, "backup_finish_date": t0 + 1,
                               "user_name": "ACME\\backup" if by == "dobaas" else by,
                               "physical_device_name": path})

    # ---- RESTORE -------------------------------------------------------------------------------------------
    def read_backup(self, path: str) -> tuple[dict, Any]:
        local = self.local(path)
        try:
            with open(local, "rb") as f:
                data = f.read()
        except OSError:
            raise err(3201, f"Cannot open backup device '{path}'. Operating system error 2(The system cannot find "
                            "the file specified.).") from None
        body, _, tail = data.rstrip(b"\n").rpartition(b"\n")
        body += b"\n"
        if not data.startswith(MAGIC) or tail != b"sha256 " + hashlib.sha256(body).hexdigest().encode():
            raise err(3189, f"Damage to the backup set was detected. (device '{path}')")
        _magic, head, payload, _filler = body.split(b"\n", 3)
        return json.loads(head), json.loads(payload)

    def restore(self, name: str, path: str | None, options: str) -> None:
        recovery = "NORECOVERY" not in options.upper()
        stopat = re.search(r"STOPAT\s*=\s*N?'([^']+)'", options, re.I)
        stopmark = re.search(r"STOPBEFOREMARK\s*=\s*N?'lsn:(\d+)'", options, re.I)
        target = self.databases.get(name.lower())
        if path is None:  # RESTORE DATABASE x WITH RECOVERY
            if target is None or target.restoring is None:
                raise err(3148, f"This RESTORE statement is invalid because database '{name}' is not in a "
                                "restoring state.")
            target.restoring, target.state = None, "ONLINE"
            return
        head, payload = self.read_backup(path)
        kind = head["type"]
        if kind == "D":
            if target is not None and "REPLACE" not in options.upper():
                raise err(1801, f"Database '{name}' already exists. Choose a different database name.")
            for logical, _t in head["files"]:
                if not re.search(rf"MOVE\s+N?'{re.escape(logical)}'\s+TO\s+N?'[^']+'", options, re.I):
                    raise err(1834, f"The file '{logical}' cannot be overwritten. It is being used by database "
                                    f"'{head['database']}'.")
            db = Database(name, state="RESTORING", rows=[list(r) for r in payload])
            db.restoring = {"base": head["checkpoint_lsn"], "at": head["last_lsn"], "stopped": False}
            self.databases[name.lower()] = db
        else:
            if target is None or target.restoring is None:
                raise err(3117, "The log or differential backup cannot be restored because no files are ready to "
                                "rollforward.")
            r = target.restoring
            if r["stopped"]:
                raise err(4330, "This backup set cannot be applied because it is on a recovery path that is "
                                "inconsistent with the database.")
            if kind == "I":
                if head["differential_base_lsn"] != r["base"]:
                    raise err(3136, "This differential backup cannot be restored because the database has not been "
                                    "restored to the correct earlier state.")
                target.rows = [list(x) for x in payload]
                r["at"] = head["last_lsn"]
            else:
                if head["first_lsn"] > r["at"]:
                    raise err(4305, f"The log in this backup set begins at LSN {head['first_lsn']}, which is too "
                                    f"recent to apply to the database. An earlier log backup that includes LSN "
                                    f"{r['at']} can be restored.")
                if head["last_lsn"] <= r["at"]:
                    raise err(4326, f"The log in this backup set terminates at LSN {head['last_lsn']}, which is too "
                                    "early to apply to the database.")
                limit = _time(stopat.group(1)) if stopat else None
                before = int(stopmark.group(1)) if stopmark else None
                for lsn, t, row in payload:
                    if lsn <= r["at"]:
                        continue
                    if (limit is not None and t > limit) or (before is not None and lsn >= before):
                        r["stopped"] = True
                        break
                    target.rows.append(list(row))
                r["at"] = head["last_lsn"]
        if recovery:
            self.databases[name.lower()].restoring = None
            self.databases[name.lower()].state = "ONLINE"

    def _db(self, name: str) -> Database:
        db = self.databases.get(name.lower())
        if db is None:
            raise err(911, f"Database '{name}' does not exist. Make sure that the name is entered correctly.")
        return db

    # ---- the TDS handler: only the statements the plugin sends -----------------------------------------
    def answer(self, q: Query | str) -> QueryResult:
        sql = (q if isinstance(q, str) else q.sql).strip()
        with self.lock:
            self.statements.append(sql)
            return self._answer(sql)

    def _answer(self, sql: str) -> QueryResult:
        empty = QueryResult(columns=[], rows=[])
        if sql.upper().startswith("SET ") and all(p.strip().upper().startswith("SET ") for p in sql.split(";")
                                                  if p.strip()):
            return empty  # FreeTDS's session settings
        if sql == ("SELECT d.name, d.recovery_model_desc, d.state_desc, SUM(CAST(mf.size AS bigint)) * 8192 FROM "
                   "sys.databases d JOIN sys.master_files mf ON mf.database_id = d.database_id GROUP BY d.name, "
                   "d.recovery_model_desc, d.state_desc ORDER BY d.name"):
            return QueryResult([Column("name", NVarChar(128)), Column("recovery_model_desc", NVarChar(60)),
                                Column("state_desc", NVarChar(60)), Column("size", Integer(8))],
                               [[d.name, d.recovery, d.state, 8 * 2**20 + len(d.rows) * 8192]
                                for d in sorted(self.databases.values(), key=lambda d: d.name)])
        m = re.fullmatch(r"RESTORE VERIFYONLY FROM DISK = N'((?:[^']|'')+)' WITH CHECKSUM", sql)
        if m:
            self.read_backup(m.group(1).replace("''", "'"))
            return empty
        m = re.fullmatch(r"SELECT b\.backup_set_id, b\.type, b\.is_copy_only, b\.first_lsn, b\.last_lsn, "
                         r"b\.checkpoint_lsn, b\.database_backup_lsn, b\.differential_base_lsn, b\.user_name, "
                         r"f\.physical_device_name, DATEDIFF\(SECOND, '1970-01-01', b\.backup_finish_date\) "
                         r"FROM msdb\.dbo\.backupset b JOIN msdb\.dbo\.backupmediafamily f ON "
                         r"f\.media_set_id = b\.media_set_id WHERE b\.database_name = N'((?:[^']|'')+)' AND "
                         r"b\.backup_set_id > (\d+) ORDER BY b\.backup_set_id", sql)
        if m:
            name = m.group(1).replace("''", "'")
            rows = [[b["backup_set_id"], b["type"], b["is_copy_only"], b["first_lsn"], b["last_lsn"],
                     b["checkpoint_lsn"], b["database_backup_lsn"], b["differential_base_lsn"], b["user_name"],
                     b["physical_device_name"], int(b["backup_finish_date"])]
                    for b in self.backupset if b["database_name"].lower() == name.lower()
                    and b["backup_set_id"] > int(m.group(2))]
            cols = ["backup_set_id", "type", "is_copy_only", "first_lsn", "last_lsn", "checkpoint_lsn",
                    "database_backup_lsn", "differential_base_lsn", "user_name", "physical_device_name", "finished"]
            types = [Integer(8), NVarChar(1), Integer(4), Integer(8), Integer(8), Integer(8), Integer(8), Integer(8),
                     NVarChar(128), NVarChar(260), Integer(8)]
            return QueryResult([Column(c, t) for c, t in zip(cols, types, strict=True)], rows)
        m = re.fullmatch(r"BACKUP (DATABASE|LOG) \[((?:[^\]]|\]\])+)\] TO DISK = N'((?:[^']|'')+)' WITH "
                         r"([A-Z_, ]+)", sql)
        if m:
            options = {o.strip() for o in m.group(4).split(",")}
            if not options <= {"CHECKSUM", "INIT", "FORMAT", "DIFFERENTIAL", "COPY_ONLY", "COMPRESSION"} or \
                    "CHECKSUM" not in options:
                raise err(102, f"Incorrect syntax near '{m.group(4)}'.", 15)
            kind = "L" if m.group(1) == "LOG" else ("I" if "DIFFERENTIAL" in options else "D")
            self.backup(m.group(2).replace("]]", "]"), kind, m.group(3).replace("''", "'"), options)
            return empty
        m = re.fullmatch(r"RESTORE FILELISTONLY FROM DISK = N'((?:[^']|'')+)'", sql)
        if m:
            head, _ = self.read_backup(m.group(1).replace("''", "'"))
            return QueryResult([Column("LogicalName", NVarChar(128)), Column("PhysicalName", NVarChar(260)),
                                Column("Type", NVarChar(1))],
                               [[n, f"C:\\Data\\{n}.{'mdf' if t == 'D' else 'ldf'}", t] for n, t in head["files"]])
        m = re.fullmatch(r"RESTORE (DATABASE|LOG) \[((?:[^\]]|\]\])+)\](?: FROM DISK = N'((?:[^']|'')+)')? WITH "
                         r"(.+)", sql, re.S)
        if m:
            self.restore(m.group(2).replace("]]", "]"), m.group(3).replace("''", "'") if m.group(3) else None,
                         m.group(4))
            return empty
        m = re.fullmatch(r"DBCC CHECKDB \(N'((?:[^']|'')+)'\) WITH NO_INFOMSGS", sql)
        if m:
            db = self._db(m.group(1).replace("''", "'"))
            if db.state != "ONLINE":
                raise err(922, f"Database '{db.name}' is being recovered. Waiting until recovery is finished.", 14)
            return empty
        raise err(102, f"Incorrect syntax near '{sql[:40]}'.", 15)


def _time(text: str) -> float:
    from datetime import datetime

    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S").astimezone().timestamp()


def start_instance(instance: Instance, users: dict[str, str]) -> tuple[int, Any]:
    server = BridgeServer("127.0.0.1", 0, query_handler=instance.answer,
                          logins=LoginStore([Login(u, p, hashed=False) for u, p in users.items()]))
    threading.Thread(target=server.serve_forever, daemon=True, name="tds-double").start()
    return server.address[1], server

