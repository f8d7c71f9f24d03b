"""``plugin: exchange``: Exchange mailbox databases, one snapshot chain per database, taken through VSS with the
Exchange writer and driven over the Windows channel (WinRM + shipped scripts + files over SMB; no agent).

- Discovery (``Get-MailboxDatabase -Status`` + ``Get-MailboxDatabaseCopyStatus``) on ``host``; in a DAG the copy
  backed up is a healthy passive one when there is one (lowest activation preference), else the active one, with
  a warning. The other DAG members are reached by the names in ``servers`` (or their own names).
- Full: the snapshot's EDB and logs; incremental: the log generations written since (a snapshot carries the
  EDB and every log of its chain, so it restores alone); a full every ``full_every`` runs, and whenever the log
  chain has a gap or circular logging is on.
- Truncation only after publication: the backup script keeps DiskShadow's backup session open (its ``exec``
  step waits) until dobaas writes ``dobaas.published`` in the staging folder, after the snapshot is committed;
  a failure writes ``dobaas.abort`` instead, and the session ends without BackupComplete, so Exchange keeps
  every log. Before publication dobaas checks the EDB header it stored (``eseutil /mh``: signature, checksum,
  state, required generations) and that every required log is in the snapshot.
Restores (plugins.exchange.restore): a recovery database, never the live one."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from typing import Any

from pydantic import BaseModel, Field

from orchestrator.plugin.base import CaptureContext, SourceConfig, SourcePlugin
from orchestrator.plugin.errors import DobaasError, NotFound
from orchestrator.plugin.export import ExportPart, HowToRead, Items, labelled_parts
from orchestrator.plugin.smb import BackupShareFields, LazySmbFile, SmbFiles
from orchestrator.plugin.streams import ByteStream, Capture, CarriedItem, Stream
from orchestrator.plugin.windows.channel import WindowsAccess, WinRmChannel
from orchestrator.plugin.windows.host import WindowsHostFields
from orchestrator.plugin.windows.scripts import Script
from plugins.exchange.ese import EdbHeader, EseError, log_generation, missing_generations, parse_header

log = logging.getLogger(__name__)
READY, PUBLISHED, ABORT = "dobaas.ready", "dobaas.published", "dobaas.abort"
#: what discovery found, per source, for the run: the runner asks for units, then captures each (plugin instances
#: are made per call); end_run forgets it
_FOUND: dict[str, dict] = {}
POLL = 0.5  # seconds between looks at the staging folder while the server copies the snapshot
HOW = HowToRead(
    fr="Base de boîtes aux lettres Exchange (sauvegarde VSS) : le fichier .edb et le dossier logs (journaux de "
       "transactions). Copier les deux dans un dossier vide du serveur Exchange, puis : eseutil /r E00 /l <logs> "
       "/s <logs> /d <dossier> /i (récupération), New-MailboxDatabase -Recovery -Name RDB -Server <serveur> "
       "-EdbFilePath <dossier>\\<base>.edb -LogFolderPath <logs>, Mount-Database RDB, New-MailboxRestoreRequest.",
    en="Exchange mailbox database (VSS backup): the .edb file and the logs folder (transaction logs). Copy both to "
       "an empty folder of the Exchange server, then: eseutil /r E00 /l <logs> /s <logs> /d <folder> /i (soft "
       "recovery), New-MailboxDatabase -Recovery -Name RDB -Server <server> -EdbFilePath <folder>\\<db>.edb "
       "-LogFolderPath <logs>, Mount-Database RDB, New-MailboxRestoreRequest.")


def script(name: str) -> Script:
    return Script.load("plugins.exchange", name)


class ExchangeServer(BaseModel):
    """How to reach a DAG member by WinRM when its name alone is not enough."""

    host: str
    port: int | None = None
    thumbprint: str | None = None


class ExchangeConfig(WindowsHostFields, BackupShareFields, SourceConfig):
    databases: list[str] = Field(default_factory=list)  # default: every mailbox database
    servers: dict[str, ExchangeServer] = Field(default_factory=dict)  # Exchange server name -> WinRM address
    prefer_passive: bool = True
    full_every: int = Field(7, ge=1)
    wait_minutes: int = Field(240, ge=1)  # how long the server keeps the backup open for dobaas to publish


class BackupSession:
    """The backup script running on the Exchange server, in a thread: DiskShadow holds the backup session open
    while dobaas reads the staging folder, and the script answers once the session is over."""

    def __init__(self, access: WindowsAccess, params: dict[str, Any]) -> None:
        self.access, self.params = access, params
        self.result: Any = None
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="exchange-backup", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            self.result = WinRmChannel(self.access).run(script("Backup-DobaasExchangeDatabase.ps1"), self.params)
        except BaseException as e:  # handed to the capture, which raises it
            self.error = e

    def running(self) -> bool:
        return self.thread.is_alive()

    def wait(self, seconds: float) -> Any:
        self.thread.join(seconds)
        if self.thread.is_alive():
            raise DobaasError(f"{self.access.host}: the backup script did not end within {seconds:.0f} s")
        if self.error is not None:
            raise self.error
        return self.result


class ExchangePlugin(SourcePlugin):
    name = "exchange"
    Config = ExchangeConfig

    def end_run(self) -> None:
        _FOUND.clear()

    def export_parts(self, meta: dict, items: Items, tree_format: str, image_format: str) -> list[ExportPart]:
        return labelled_parts(items, tree_format, image_format, "Exchange mailbox database", HOW)

    def restore_database(self, meta: dict, items: list[str], write_item: Any, options: dict) -> dict:
        from plugins.exchange.restore import restore

        return restore(meta, items, write_item, options)

    # ---- discovery ------------------------------------------------------------------------------------------
    def _discovery(self, cfg: ExchangeConfig) -> dict:
        key = f"{cfg.name}\0{cfg.host}"
        if key not in _FOUND:
            res = WinRmChannel(cfg.access()).run(script("Get-DobaasExchangeDatabases.ps1"), {}, idempotent=True)
            dbs = res.get("Databases") or []
            _FOUND[key] = {"computer": res.get("Computer") or "",
                                     "databases": {d["Name"]: d for d in ([dbs] if isinstance(dbs, dict) else dbs)}}
        return _FOUND[key]

    def units(self, cfg: ExchangeConfig) -> list[str]:
        found = self._discovery(cfg)["databases"]
        missing = [d for d in cfg.databases if d not in found]
        if missing:
            raise NotFound(f"source {cfg.name}: no mailbox database {', '.join(missing)} on {cfg.host} "
                           f"(found: {', '.join(sorted(found)) or 'none'})")
        return list(cfg.databases) or sorted(found)

    def discover(self, cfg: ExchangeConfig) -> list[str]:
        return self.units(cfg)

    def choose_copy(self, cfg: ExchangeConfig, db: dict) -> tuple[str, str, list[str]]:
        """(server, 'passive'|'active', warnings): a healthy passive copy when there is one and it is wanted."""
        copies = db.get("Copies") or []
        copies = [copies] if isinstance(copies, dict) else copies
        passive = sorted((c for c in copies if c.get("Status") == "Healthy"),
                         key=lambda c: (c.get("ActivationPreference") or 99, c.get("CopyQueueLength") or 0))
        if cfg.prefer_passive and passive:
            return passive[0]["Server"], "passive", []
        if not db.get("Mounted"):
            raise DobaasError(f"mailbox database {db['Name']} is dismounted and has no healthy passive copy: "
                              f"Mount-Database {db['Name']}, or repair a copy")
        warnings = []
        if cfg.prefer_passive and len(copies) > 1:
            others = ", ".join(f"{c.get('Server')}: {c.get('Status')}" for c in copies if c.get("Status") != "Mounted")
            warnings.append(f"no healthy passive copy of {db['Name']} ({others}): backed up from the active copy on "
                            f"{db['Server']}")
        return db["Server"], "active", warnings

    def server_access(self, cfg: ExchangeConfig, server: str) -> WindowsAccess:
        base = cfg.access()
        s = next((v for k, v in cfg.servers.items() if k.lower() == server.lower()), None)
        if s is not None:
            return replace(base, host=s.host, port=s.port or base.port, thumbprint=s.thumbprint or base.thumbprint)
        if server.lower() == self._discovery(cfg)["computer"].lower():
            return base
        return replace(base, host=server)  # a DAG member by its own (DNS) name, with the source's settings

    # ---- capture --------------------------------------------------------------------------------------------
    @contextmanager
    def capture(self, cfg: ExchangeConfig, checkpoint: dict | None, ctx: CaptureContext) -> Iterator[Capture]:
        db = self._discovery(cfg)["databases"].get(ctx.unit)
        if db is None:
            raise NotFound(f"source {cfg.name}: mailbox database {ctx.unit!r} is gone from {cfg.host}")
        server, role, warnings = self.choose_copy(cfg, db)
        access = self.server_access(cfg, server)
        files = cfg.share_files(cfg.user, access.password, f"source {cfg.name}")
        folder = f"dobaas-exchange-{ctx.lineage or 'run'}"
        url, unc = f"{cfg.share}/{folder}", f"{cfg.share_path}\\{folder}"
        prefix = db.get("LogFilePrefix") or "E00"
        base = checkpoint if checkpoint and checkpoint.get("guid") == db.get("Guid") else None
        if checkpoint and base is None:
            warnings.append(f"{db['Name']} is a new database (its GUID changed): this run is a full backup")
        if base and db.get("CircularLoggingEnabled"):
            warnings.append(f"circular logging is on for {db['Name']}: logs cannot be chained, every backup is full")
            base = None
        if base and base.get("runs_since_full", 0) + 1 >= cfg.full_every:
            base = None
        try:
            _abandon(files, url)  # a killed run's folder: its server-side session must end without truncation
            session, ready = self._start(access, files, db, url, unc, base, cfg.wait_minutes)
            try:
                have = set(_generations(ready, prefix).values())
                gap = base and [g for g in range(base["last_gen"] + 1, ready["Current"]) if g not in have]
                if gap:
                    warnings.append(f"logs 0x{gap[0]:X}-0x{gap[-1]:X} of {db['Name']} are gone from the server "
                                    "(truncated by another backup, or removed): this run is a full backup")
                    _signal(files, url, ABORT)
                    _quietly(session)
                    files.remove_tree(url)
                    base = None
                    session, ready = self._start(access, files, db, url, unc, None, cfg.wait_minutes)
                capture = self._capture(cfg, db, files, url, ready, base, server, role, access, warnings)
            except BaseException:
                _signal(files, url, ABORT)
                _quietly(session)
                raise
            try:
                yield capture
            except BaseException:  # not published: the session ends without BackupComplete, the logs stay
                _signal(files, url, ABORT)
                _quietly(session)
                raise
            # the snapshot is committed: now, and only now, Exchange may complete the backup and truncate logs
            _signal(files, url, PUBLISHED)
            try:
                res = session.wait(600)
                log.info("%s: %s backup completed on %s (%s); Exchange truncates the logs below 0x%X",
                         cfg.name, db["Name"], server, res.get("Writer"), capture.meta["ese"]["log_required"][0])
            except Exception as e:
                log.warning("%s: %s is stored, but %s did not confirm the end of the backup, so its logs were not "
                            "truncated this time: %s", cfg.name, db["Name"], server, e)
        finally:
            try:
                files.remove_tree(url)
            except OSError as e:
                log.warning("%s: the staging folder %s could not be removed: %s", cfg.name, url, e)
            files.close()

    def _start(self, access: WindowsAccess, files: SmbFiles, db: dict, url: str, unc: str, base: dict | None,
               wait_minutes: int) -> tuple[BackupSession, dict]:
        """Check the copy and its VSS writer, create the staging folder, start the server's backup session, wait
        until the snapshot is copied."""
        channel = WinRmChannel(access)
        check = channel.run(script("Test-DobaasExchangeBackup.ps1"), {"Database": db["Name"]}, idempotent=True)
        helper = channel.run(script("Copy-DobaasExchangeShadow.ps1"), {"Install": True}, idempotent=True)["Path"]
        files.makedirs(url)
        session = BackupSession(access, {"Target": unc, "WriterId": check["WriterId"], "Edb": check["EdbFilePath"],
                                         "LogDir": check["LogFolderPath"], "Prefix": check["LogFilePrefix"],
                                         "FromGeneration": base["last_gen"] if base else 0,
                                         "WaitMinutes": wait_minutes, "Helper": helper})
        while not files.exists(f"{url}/{READY}"):
            if not session.running():
                session.wait(0)  # raises the script's error
                raise DobaasError(f"{access.host}: the backup of {db['Name']} ended before the snapshot was copied")
            time.sleep(POLL)
        with files.open_read(f"{url}/{READY}") as f:
            ready = json.loads(f.read().decode("utf-8-sig"))
        ready["Files"] = [ready["Files"]] if isinstance(ready.get("Files"), str) else list(ready.get("Files") or [])
        if not isinstance(ready.get("Current"), int) or ready["Current"] < 1:
            raise DobaasError(f"{access.host}: eseutil /ml gave no generation for the current log of {db['Name']}")
        return session, ready

    def _capture(self, cfg: ExchangeConfig, db: dict, files: SmbFiles, url: str, ready: dict, base: dict | None,
                 server: str, role: str, access: WindowsAccess, warnings: list[str]) -> Capture:
        """The streams of the staged copy, once the EDB header and the log chain are checked."""
        edb = db["EdbFilePath"].replace("/", "\\").rsplit("\\", 1)[-1]
        prefix = db.get("LogFilePrefix") or "E00"
        if base:
            header_meta = base["ese"]
        else:
            if edb not in ready["Files"]:
                raise DobaasError(f"{server}: the snapshot copy of {db['Name']} has no {edb}")
            with files.open_read(f"{url}/{edb}") as f:
                page = f.read(32768)
            try:
                header = parse_header(page)
            except EseError as e:
                raise DobaasError(f"{db['Name']}: the EDB copied from the snapshot is damaged ({e}): nothing is "
                                  "published and Exchange keeps its logs") from None
            if header.state not in ("Dirty Shutdown", "Clean Shutdown"):
                raise DobaasError(f"{db['Name']}: the EDB copied from the snapshot is in state {header.state}")
            header_meta = header.as_meta()
        low, high = header_meta["log_required"]
        current = int(ready["Current"])
        new = {n: g for n, g in _generations(ready, prefix).items() if low <= g < current}  # older: not needed
        carried = list(base["logs"]) if base else []
        stored = {g for n in carried if (g := log_generation(n, prefix)) is not None} | set(new.values())
        has_current = f"logs/{prefix}.log" in ready["Files"]
        missing = missing_generations(EdbHeader(header_meta["state"], header_meta["page_size"], 0, 0, (low, high)),
                                      stored, current if has_current else None)
        if missing:
            raise DobaasError(f"{db['Name']}: logs needed to replay the database are not in the snapshot "
                              f"({', '.join(missing[:10])}): nothing is published and Exchange keeps its logs")
        streams: list[Stream] = [CarriedItem(i, i) for i in ([base["edb_item"], *carried] if base else [])]
        if not base:
            streams.append(ByteStream(edb, LazySmbFile(files, f"{url}/{edb}")))
        names = [*sorted(new), f"logs/{prefix}.log"]
        streams += [ByteStream(n, LazySmbFile(files, f"{url}/{n}")) for n in names]
        chain = [*carried, *sorted(new)]
        method = "Incremental" if base else "Full"
        token = {"guid": db.get("Guid"), "edb_item": base["edb_item"] if base else edb, "ese": header_meta,
                 "logs": chain, "last_gen": current - 1,
                 "runs_since_full": base["runs_since_full"] + 1 if base else 0}
        access_names = cfg.access_names()
        access_names.update(host=access.host, port=access.port, thumbprint=access.thumbprint)
        meta = {"database": db["Name"], "guid": db.get("Guid"), "method": method, "server": server, "copy": role,
                "dag": db.get("Dag"), "edb": edb, "edb_path": db.get("EdbFilePath"),
                "log_folder": db.get("LogFolderPath"), "log_prefix": prefix, "ese": header_meta,
                "generations": [low, current], "items": [token["edb_item"], *chain, f"logs/{prefix}.log"],
                "access": access_names, **cfg.share_names()}
        writer = "Microsoft Exchange Replica Writer" if role == "passive" else "Microsoft Exchange Writer"
        return Capture(streams, token, f"application-consistent (VSS, {writer}, {role} copy on {server}; "
                       f"EDB {header_meta['state']}, logs 0x{low:X}-0x{current:X} replayable)", warnings, meta)


def _generations(ready: dict, prefix: str) -> dict[str, int]:
    """The numbered logs a staged copy holds: {item name: generation}."""
    out = {}
    for n in ready["Files"]:
        if n.startswith("logs/") and (g := log_generation(n, prefix)) is not None:
            out[n] = g
    return out


def _signal(files: SmbFiles, url: str, name: str) -> None:
    """Tell the waiting server what became of the snapshot (a file in the staging folder)."""
    try:
        if files.exists(url) and not files.exists(f"{url}/{name}"):
            with files.open_write(f"{url}/{name}") as f:
                f.write(time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()).encode())
    except OSError as e:
        log.warning("could not write %s in %s: %s", name, url, e)


def _abandon(files: SmbFiles, url: str) -> None:
    """A staging folder left by a killed run: its session (if still waiting) is told to give up, then it goes."""
    if files.exists(url):
        _signal(files, url, ABORT)
        files.remove_tree(url)


def _quietly(session: BackupSession) -> None:
    """Let an abandoned session end (it stops without BackupComplete); its error is expected."""
    try:
        session.wait(120)
    except Exception as e:
        log.info("the abandoned backup session ended: %s", e)
