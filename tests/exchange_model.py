"""A model Exchange organisation behind the WS-Man double: the handlers of the exchange plugin's shipped scripts.

Each server has local volumes (folders here: ``E:`` is ``<root>/<SERVER>/E``). A mailbox database is written as
ESE writes it, in the parts the plugin reads: an EDB whose header page has ESE's signature, XOR checksum, file
type, state, page size and the required log generations (offsets as libesedb documents them), followed by the
mailboxes as of its last flush; transaction logs ``E00xxxxxxxx.log`` (one generation each, 8 hex digits) and the
current ``E00.log``, each holding the operations of its generation. In a DAG every Mounted or Healthy copy holds
the same files; a failed copy stops receiving them.

The backup handler models DiskShadow's session: the VSS snapshot (the files frozen as they are), the exec step
copying the EDB (full) and the generations above FromGeneration to Target on the real Samba share with
dobaas.ready, then waiting for dobaas.published (BackupComplete: logs below the snapshot's checkpoint truncated on
every copy, LastFullBackup set), or dobaas.abort / Target gone / the wait's end (no truncation, DiskShadow's exit
code 1). Restore models the server copying the files, ``eseutil /r`` (replay from the lowest required generation,
-528 when a log is missing), ``eseutil /mh``, New-MailboxDatabase -Recovery, Mount-Database and
New-MailboxRestoreRequest. Not modelled: ESE's real page format beyond the header, the content index, the
Replication service's log shipping (copies are written alike), and anything not listed here."""

from __future__ import annotations

import functools
import json
import operator
import os
import shutil
import struct
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from tests.wsman import ScriptFailure

PAGE = 32768
WRITER = "{76fe1ac4-15f7-4bcd-987e-8e1acb462fb7}"


def edb_bytes(mailboxes: dict, state: int, low: int, high: int) -> bytes:
    """An EDB: header page (and its shadow) as ESE writes it, then the mailboxes as the flushed pages."""
    header = bytearray(PAGE)
    struct.pack_into("<IIII", header, 4, 0x89ABCDEF, 0x620, 0, 0)  # signature, format version, file type database
    struct.pack_into("<I", header, 52, state)
    struct.pack_into("<II", header, 232, 0x14, PAGE)  # format revision (Exchange 2013+), page size
    struct.pack_into("<II", header, 296, low, high)
    words = struct.unpack(f"<{PAGE // 4 - 1}I", bytes(header[4:]))
    struct.pack_into("<I", header, 0, functools.reduce(operator.xor, words, 0x89ABCDEF))
    body = json.dumps(mailboxes, sort_keys=True).encode()
    body = struct.pack("<I", len(body)) + body
    body += b"\0" * (-len(body) % PAGE)
    return bytes(header) * 2 + body


def read_edb(path: str) -> tuple[dict, int, int, int]:
    with open(path, "rb") as f:
        data = f.read()
    (state,) = struct.unpack_from("<I", data, 52)
    low, high = struct.unpack_from("<II", data, 296)
    (n,) = struct.unpack_from("<I", data, 2 * PAGE)
    return json.loads(data[2 * PAGE + 4 : 2 * PAGE + 4 + n]), state, low, high


@dataclass
class Server:
    name: str
    root: str  # its volumes live below
    information_store: bool = True  # MSExchangeIS running (the writer registered)
    replication: bool = True  # MSExchangeRepl running (the Replica Writer registered)
    writer_failure: tuple[str, str] | None = None  # (state, last error) of its Exchange writer
    rights: bool = True
    helper: str = ""  # where Copy-DobaasExchangeShadow.ps1 installed itself

    def local(self, path: str) -> str:
        drive, rest = path.split(":", 1)
        return os.path.join(self.root, drive.upper(), *[p for p in rest.split("\\") if p])


@dataclass
class Database:
    name: str
    active: str
    copies: dict[str, str]  # server -> status (Mounted, Healthy, FailedAndSuspended, …)
    guid: str = field(default_factory=lambda: str(uuid.uuid4()))
    prefix: str = "E00"
    edb_path: str = ""
    log_folder: str = ""
    circular: bool = False
    mailboxes: dict[str, dict[str, str]] = field(default_factory=dict)
    gen: int = 1  # the generation E00.log holds
    current_ops: list[dict] = field(default_factory=list)
    flushed: dict[str, dict[str, str]] = field(default_factory=dict)  # what the EDB holds
    checkpoint: int = 1  # lowest generation the EDB needs
    last_full_backup: datetime | None = None


@dataclass
class Organization:
    share_dir: str  # the Samba share's directory here
    share_unc: str  # how the servers name it
    servers: dict[str, Server] = field(default_factory=dict)
    databases: dict[str, Database] = field(default_factory=dict)
    recovery: dict[str, dict] = field(default_factory=dict)  # recovery databases: name -> {server, mailboxes}
    lose_staged_log: bool = False  # the staged copy loses a log after dobaas.ready (a cut copy)
    damage_staged_edb: bool = False  # one byte of the staged EDB's header flips
    ready: threading.Event = field(default_factory=threading.Event)  # set when a session wrote dobaas.ready
    on_truncate: Callable[[str], None] | None = None  # called with the database name when logs are truncated
    sessions: list[str] = field(default_factory=list)  # how each backup session ended: completed / abandoned
    lock: threading.Lock = field(default_factory=threading.Lock)

    def handlers(self, server: str) -> dict:
        return {"Get-DobaasExchangeDatabases.ps1": lambda p: self.get_databases(server, p),
                "Test-DobaasExchangeBackup.ps1": lambda p: self.test_backup(server, p),
                "Copy-DobaasExchangeShadow.ps1": lambda p: self.install(server, p),
                "Backup-DobaasExchangeDatabase.ps1": lambda p: self.backup(server, p),
                "Restore-DobaasExchangeDatabase.ps1": lambda p: self.restore(server, p),
                "New-DobaasMailboxRestore.ps1": lambda p: self.restore_mailboxes(server, p)}

    # ---- the live databases -----------------------------------------------------------------------------------
    def add_database(self, name: str, active: str, passive: list[str] | None = None) -> Database:
        db = Database(name, active, {active: "Mounted", **{s: "Healthy" for s in passive or []}},
                      edb_path=f"E:\\Mailbox\\{name}\\{name}.edb", log_folder=f"E:\\Mailbox\\{name}\\Logs")
        self.databases[name] = db
        self._write(db)
        return db

    def deliver(self, db_name: str, mailbox: str, item: str, content: str) -> None:
        db = self.databases[db_name]
        with self.lock:
            db.mailboxes.setdefault(mailbox, {})[item] = content
            db.current_ops.append({"mailbox": mailbox, "item": item, "content": content})
            self._write(db)

    def roll(self, db_name: str, flush: bool = False) -> None:
        """The current log is full: it becomes generation ``gen``; ``flush``: the EDB catches up (checkpoint)."""
        db = self.databases[db_name]
        with self.lock:
            for server in self._copies(db):
                d = self._log_dir(server, db)
                os.replace(os.path.join(d, f"{db.prefix}.log"), os.path.join(d, f"{db.prefix}{db.gen:08X}.log"))
            db.gen += 1
            db.current_ops = []
            if flush:
                db.flushed = json.loads(json.dumps(db.mailboxes))
                db.checkpoint = db.gen
                if db.circular:
                    for server in self._copies(db):
                        self._truncate_files(server, db, db.checkpoint)
            self._write(db)

    def log_generations(self, db_name: str, server: str) -> list[int]:
        db = self.databases[db_name]
        d = self._log_dir(self.servers[server], db)
        return sorted(int(n[len(db.prefix) : -4], 16) for n in os.listdir(d) if len(n) == len(db.prefix) + 12)

    def _copies(self, db: Database) -> list[Server]:
        return [self.servers[s] for s, st in db.copies.items() if st in ("Mounted", "Healthy")]

    def _log_dir(self, server: Server, db: Database) -> str:
        return server.local(db.log_folder)

    def _write(self, db: Database) -> None:
        for server in self._copies(db):
            d = self._log_dir(server, db)
            os.makedirs(d, exist_ok=True)
            with open(os.path.join(d, f"{db.prefix}.log"), "w") as f:
                json.dump({"generation": db.gen, "ops": db.current_ops}, f)
            edb = server.local(db.edb_path)
            os.makedirs(os.path.dirname(edb), exist_ok=True)
            with open(edb, "wb") as f:
                f.write(edb_bytes(db.flushed, 2, db.checkpoint, db.gen))

    def truncate_elsewhere(self, db_name: str) -> None:
        """Another backup product (or an administrator) removed logs the last dobaas snapshot did not have."""
        db = self.databases[db_name]
        for server in self._copies(db):
            self._truncate_files(server, db, db.gen)

    def _truncate_files(self, server: Server, db: Database, below: int) -> None:
        d = self._log_dir(server, db)
        for n in os.listdir(d):
            if len(n) == len(db.prefix) + 12 and int(n[len(db.prefix) : -4], 16) < below:
                os.remove(os.path.join(d, n))

    # ---- scripts ----------------------------------------------------------------------------------------------
    def _cmdlets(self, server: Server) -> None:
        if not server.rights:
            raise ScriptFailure("the Exchange cmdlets are not available: not an Exchange server, or the account has "
                                "no Exchange management role (Organization Management or Server Management)")

    def get_databases(self, server_name: str, p: dict) -> dict:
        self._cmdlets(self.servers[server_name])
        out = []
        for db in self.databases.values():
            if p.get("Database") and db.name not in p["Database"]:
                continue
            copies = [{"Server": s, "Status": st, "CopyQueueLength": 0, "ReplayQueueLength": 0,
                       "ActivationPreference": i + 1} for i, (s, st) in enumerate(db.copies.items())]
            out.append({"Name": db.name, "Guid": db.guid, "Server": db.active, "Mounted": True,
                        "EdbFilePath": db.edb_path, "LogFolderPath": db.log_folder, "LogFilePrefix": db.prefix,
                        "CircularLoggingEnabled": db.circular, "Dag": "DAG01" if len(db.copies) > 1 else None,
                        "LastFullBackup": db.last_full_backup, "Copies": copies})
        return {"Computer": server_name, "Databases": out}

    def local_share(self, unc: str) -> str:
        if not unc.lower().startswith(self.share_unc.lower() + "\\"):
            raise ScriptFailure(f"Cannot find path '{unc}' because it does not exist.")
        return os.path.join(self.share_dir, *unc[len(self.share_unc) + 1 :].split("\\"))

    def test_backup(self, server_name: str, p: dict) -> dict:
        server = self.servers[server_name]
        self._cmdlets(server)
        db = self.databases.get(p["Database"])
        if db is None:
            raise ScriptFailure(f"The operation couldn't be performed because object '{p['Database']}' couldn't be "
                                "found on 'dc1.acme.local'.")
        writer, status = self._writer(server, db)
        return {"Computer": server_name, "Copy": status, "Writer": writer, "WriterId": WRITER,
                "EdbFilePath": db.edb_path, "LogFolderPath": db.log_folder, "LogFilePrefix": db.prefix}

    def install(self, server_name: str, p: dict) -> dict:
        if p.get("Install") is not True:
            raise ScriptFailure("over WinRM, Copy-DobaasExchangeShadow.ps1 only installs itself (-Install $true)")
        self.servers[server_name].helper = "C:\\ProgramData\\dobaas\\Copy-DobaasExchangeShadow.ps1"
        return {"Path": self.servers[server_name].helper}

    def _writer(self, server: Server, db: Database) -> tuple[str, str]:
        status = db.copies.get(server.name)
        if status not in ("Mounted", "Healthy"):
            raise ScriptFailure(f"the copy of {db.name} on {server.name} is {status}: only a Mounted or Healthy copy "
                                "can be backed up")
        writer = "Microsoft Exchange Writer" if status == "Mounted" else "Microsoft Exchange Replica Writer"
        if (status == "Mounted" and not server.information_store) or (status == "Healthy" and not server.replication):
            raise ScriptFailure(f"the VSS writer '{writer}' is not registered: is the Microsoft Exchange Information "
                                "Store service (MSExchangeIS) or, for a passive copy, the Replication service "
                                "(MSExchangeRepl) running?")
        if server.writer_failure:
            state, err = server.writer_failure
            raise ScriptFailure(f"the VSS writer '{writer}' is not ready: state {state}, last error: {err}")
        return writer, status

    def backup(self, server_name: str, p: dict) -> dict:
        server = self.servers[server_name]
        db = next((d for d in self.databases.values() if d.edb_path == p["Edb"]), None)
        if db is None or p["LogDir"] != db.log_folder or p["Prefix"] != db.prefix:
            raise ScriptFailure(f"Copy-Item : Cannot find path '{p['Edb']}' because it does not exist.")
        if p["Helper"] != server.helper:
            raise ScriptFailure(f"DiskShadow ended without completing the backup (exit 1): {p['Helper']} is not "
                                "recognized as the name of a cmdlet, function, script file, or operable program")
        if p["WriterId"] != WRITER:
            raise ScriptFailure(f"DiskShadow ended without completing the backup (exit 1): writer {p['WriterId']} "
                                "was not found")
        writer, status = self._writer(server, db)  # DiskShadow's writer verify
        target = self.local_share(p["Target"])
        if not os.path.isdir(target):
            raise ScriptFailure(f"Cannot find path '{p['Target']}' because it does not exist.")
        # the snapshot: the copy's files, frozen now
        with self.lock:
            shadow = os.path.join(server.root, f"shadow-{uuid.uuid4().hex[:8]}")
            shutil.copytree(os.path.dirname(server.local(db.edb_path)), shadow)
            checkpoint = db.checkpoint
        logs = os.path.join(shadow, "Logs")
        try:
            files = []
            if p["FromGeneration"] == 0:
                shutil.copy(os.path.join(shadow, f"{db.name}.edb"), target)
                files.append(f"{db.name}.edb")
            os.makedirs(os.path.join(target, "logs"), exist_ok=True)
            for n in sorted(os.listdir(logs)):
                gen = 0 if n == f"{db.prefix}.log" else int(n[len(db.prefix) : -4], 16)
                if n == f"{db.prefix}.log" or gen > p["FromGeneration"]:
                    shutil.copy(os.path.join(logs, n), os.path.join(target, "logs"))
                    files.append(f"logs/{n}")
            for dirpath, dirs, names in os.walk(target):
                for x in dirs + names:
                    os.chmod(os.path.join(dirpath, x), 0o777)
            with open(os.path.join(logs, f"{db.prefix}.log")) as cur:  # eseutil /ml: its lGeneration
                current = json.load(cur)["generation"]
            with open(os.path.join(target, "dobaas.ready"), "w", encoding="utf-8-sig") as f:
                json.dump({"Files": files, "Current": current}, f)
            os.chmod(os.path.join(target, "dobaas.ready"), 0o666)
            self.ready.set()
            if self.damage_staged_edb and p["FromGeneration"] == 0:
                with open(os.path.join(target, f"{db.name}.edb"), "r+b") as f:
                    f.seek(1000)
                    b = f.read(1)
                    f.seek(1000)
                    f.write(bytes([b[0] ^ 0x10]))
            if self.lose_staged_log:
                numbered = sorted(f for f in files if f.startswith("logs/") and f != f"logs/{db.prefix}.log")
                os.remove(os.path.join(target, *numbered[-1].split("/")))
            deadline = time.monotonic() + p["WaitMinutes"] * 60
            outcome = "timed out"
            while time.monotonic() < deadline:
                if os.path.exists(os.path.join(target, "dobaas.published")):
                    outcome = "completed"
                    break
                if os.path.exists(os.path.join(target, "dobaas.abort")) or not os.path.isdir(target):
                    outcome = "abandoned"
                    break
                time.sleep(0.1)
        finally:
            shutil.rmtree(shadow, ignore_errors=True)
        self.sessions.append(outcome)
        if outcome != "completed":
            why = " dobaas abandoned the backup" if outcome == "abandoned" else ""
            raise ScriptFailure(f"DiskShadow ended without completing the backup (exit 1):{why} The script file "
                                "returned an error; Exchange truncated no log")
        # BackupComplete: the writer truncates the logs the snapshot's database no longer needs, on every copy
        with self.lock:
            if self.on_truncate:
                self.on_truncate(db.name)
            for s in self._copies(db):
                self._truncate_files(s, db, checkpoint)
            db.last_full_backup = datetime.now(UTC)
        return {"Computer": server_name, "Writer": writer, "Copy": status, "LastFullBackup": db.last_full_backup,
                "Completed": True}

    def restore(self, server_name: str, p: dict) -> dict:
        server = self.servers[server_name]
        self._cmdlets(server)
        name = p["RecoveryName"]
        if name in self.recovery or name in self.databases:
            raise ScriptFailure(f"a database named {name} already exists: choose another recovery database name")
        target = p["TargetFolder"].rstrip("\\")
        for live in self.databases.values():
            for folder in (live.edb_path.rsplit("\\", 1)[0], live.log_folder):
                a, b = target.lower(), folder.lower()
                if a == b or a.startswith(b + "\\") or b.startswith(a + "\\"):
                    raise ScriptFailure(f"{p['TargetFolder']} overlaps the folder {folder} of the live database "
                                        f"{live.name}: choose an empty folder of its own")
        local = server.local(target)
        if os.path.isdir(local) and os.listdir(local):
            raise ScriptFailure(f"{p['TargetFolder']} is not empty: choose an empty folder")
        source = self.local_share(p["Source"])
        os.makedirs(os.path.join(local, "logs"), exist_ok=True)
        shutil.copy(os.path.join(source, p["EdbName"]), local)
        for n in os.listdir(os.path.join(source, "logs")):
            shutil.copy(os.path.join(source, "logs", n), os.path.join(local, "logs"))
        # eseutil /r: replay from the lowest required generation, in order, then the current log
        mailboxes, _state, low, high = read_edb(os.path.join(local, p["EdbName"]))
        prefix = p["LogFilePrefix"]
        logs = os.path.join(local, "logs")
        numbered = sorted(int(n[len(prefix) : -4], 16) for n in os.listdir(logs) if len(n) == len(prefix) + 12)
        current = os.path.join(logs, f"{prefix}.log")
        if not os.path.exists(current):
            raise ScriptFailure("eseutil /r failed (exit -528): Operation terminated with error -528 "
                                "(JET_errMissingLogFile, Current log file missing) after 0.2 seconds.")
        with open(current) as f:
            current_log = json.load(f)
        top = max([*numbered, current_log["generation"] - 1])
        for g in range(low, top + 1):
            if g not in numbered:
                raise ScriptFailure(f"eseutil /r failed (exit -528): Operation terminated with error -528 "
                                    f"(JET_errMissingLogFile, Current log file missing) after 0.2 seconds. Missing "
                                    f"log generation 0x{g:X}.")
        if current_log["generation"] < high:
            raise ScriptFailure("eseutil /r failed (exit -543): Operation terminated with error -543 "
                                "(JET_errRequiredLogFilesMissing, The required log files for recovery are missing).")
        for g in [g for g in numbered if g >= low]:
            with open(os.path.join(logs, f"{prefix}{g:08X}.log")) as f:
                ops = json.load(f)["ops"]
            for op in ops:
                mailboxes.setdefault(op["mailbox"], {})[op["item"]] = op["content"]
        for op in current_log["ops"]:
            mailboxes.setdefault(op["mailbox"], {})[op["item"]] = op["content"]
        with open(os.path.join(local, p["EdbName"]), "wb") as f:
            f.write(edb_bytes(mailboxes, 3, 0, 0))
        self.recovery[name] = {"server": server_name, "mailboxes": mailboxes, "mounted": True}
        return {"RecoveryDatabase": name, "Server": server_name, "State": "Clean Shutdown",
                "EdbFilePath": f"{target}\\{p['EdbName']}"}

    def restore_mailboxes(self, server_name: str, p: dict) -> dict:
        name = p["RecoveryName"]
        rdb = self.recovery.get(name)
        if rdb is None or not rdb["mounted"]:
            raise ScriptFailure(f"The operation couldn't be performed because object '{name}' couldn't be found.")
        requests = []
        for m in p["Mailboxes"]:
            if m not in rdb["mailboxes"]:
                raise ScriptFailure(f"The mailbox '{m}' was not found in the recovery database {name}.")
            live = next(d for d in self.databases.values() if m in d.mailboxes)
            for item, content in rdb["mailboxes"][m].items():
                self.deliver(live.name, m, f"Restored {name}/{item}", content)
            requests.append({"Mailbox": m, "Name": f"{m}\\MailboxRestore", "Status": "Queued"})
        return {"RecoveryDatabase": name, "Requests": requests}
