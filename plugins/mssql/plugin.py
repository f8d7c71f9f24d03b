"""``plugin: mssql``: SQL Server databases, one snapshot per database, each holding a complete restorable chain.

Each run SQL Server itself writes the backup (``BACKUP DATABASE … TO DISK = N'<share_path>\\…' WITH CHECKSUM``)
to a share that dobaas reads (a Samba share on the dobaas machine is the usual set-up): a full on the first run,
every ``full_every`` runs and whenever the chain is broken, a differential otherwise, and for FULL/BULK_LOGGED
databases a log backup too (the log is truncated and point-in-time restore possible). The files are read into
the vault (content-defined chunks: an unchanged full dedups) and removed from the share once the snapshot is
published (or when the run fails). The chain is followed by LSN in ``msdb.dbo.backupset``: a full or log backup
taken by another tool breaks it, and the next run takes a full with a warning naming that backup. Every snapshot
carries its full, its differential and every log since the full, so it restores alone."""

from __future__ import annotations

import fnmatch
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, BinaryIO

from pydantic import Field

from orchestrator.plugin.base import CaptureContext, PasswordFields, SourceConfig, SourcePlugin
from orchestrator.plugin.errors import BadInput, DobaasError, NotFound, UsageError
from orchestrator.plugin.export import ExportPart, Items
from orchestrator.plugin.smb import BackupShareFields, SmbFiles
from orchestrator.plugin.streams import ByteStream, Capture, CarriedItem, Stream
from plugins.mssql import export
from plugins.mssql.connection import Connection, Server, quote_name, quote_str

SYSTEM = {"master", "model", "msdb", "tempdb"}
DATABASES = ("SELECT d.name, d.recovery_model_desc, d.state_desc, SUM(CAST(mf.size AS bigint)) * 8192 FROM "
             "sys.databases d JOIN sys.master_files mf ON mf.database_id = d.database_id GROUP BY d.name, "
             "d.recovery_model_desc, d.state_desc ORDER BY d.name")
HISTORY = ("SELECT b.backup_set_id, b.type, b.is_copy_only, b.first_lsn, b.last_lsn, b.checkpoint_lsn, "
           "b.database_backup_lsn, b.differential_base_lsn, b.user_name, f.physical_device_name, "
           "DATEDIFF(SECOND, '1970-01-01', b.backup_finish_date) FROM msdb.dbo.backupset b JOIN "
           "msdb.dbo.backupmediafamily f ON f.media_set_id = b.media_set_id WHERE b.database_name = {db} AND "
           "b.backup_set_id > {after} ORDER BY b.backup_set_id")


class MssqlConfig(PasswordFields, BackupShareFields, SourceConfig):
    host: str
    port: int = 1433
    user: str
    databases: list[str] = Field(min_length=1)
    full_every: int = Field(default=7, ge=1, le=366)
    log_every_run: bool = True
    copy_only: bool = False
    compression: bool = False

    def server(self) -> Server:
        password = self.password()
        if password is None:
            raise BadInput(f"source {self.name}: give password_env or password_file for {self.user}")
        return Server(self.host, self.port, self.user, password)

    def files(self) -> SmbFiles:
        """The share SQL Server writes to (``share``, ``share_path``: BackupShareFields), as dobaas reads it."""
        return self.share_files(self.user, self.password(), f"source {self.name}")


def _row(r: tuple) -> dict:
    keys = ("id", "type", "copy_only", "first_lsn", "last_lsn", "checkpoint_lsn", "database_backup_lsn",
            "differential_base_lsn", "user", "device", "finished")
    return dict(zip(keys, r, strict=True))


class MssqlPlugin(SourcePlugin):
    name = "mssql"
    Config = MssqlConfig

    def export_parts(self, meta: dict, items: Items, tree_format: str, image_format: str) -> list[ExportPart]:
        return export.export_parts(meta, items, tree_format, image_format)

    def _databases(self, cfg: MssqlConfig, conn: Connection) -> list[tuple]:
        rows = conn.rows(DATABASES)
        out, missing = [], []
        for pattern in cfg.databases:
            hit = [r for r in rows if fnmatch.fnmatchcase(r[0].lower(), pattern.lower())
                   and (r[0].lower() not in SYSTEM or r[0].lower() == pattern.lower())]
            if not hit and not any(c in pattern for c in "*?["):
                missing.append(pattern)
            out += [r for r in hit if r not in out and r[0].lower() != "tempdb"]
        if missing:
            raise NotFound(f"{cfg.host}: no database named {', '.join(missing)}")
        return out

    def units(self, cfg: MssqlConfig) -> list[str]:
        conn = Connection(cfg.server())
        try:
            return [r[0] for r in self._databases(cfg, conn)]
        finally:
            conn.close()

    def discover(self, cfg: MssqlConfig) -> list[str]:
        conn = Connection(cfg.server())
        try:
            return [f"{name} ({recovery}, {state.lower()}, {size / 2**20:.0f} MiB)"
                    for name, recovery, state, size in self._databases(cfg, conn)]
        finally:
            conn.close()

    @contextmanager
    def capture(self, cfg: MssqlConfig, checkpoint: dict | None, ctx: CaptureContext) -> Iterator[Capture]:
        if not ctx.unit:
            raise UsageError("the mssql plugin captures one database at a time")
        conn = Connection(cfg.server())
        files = cfg.files()
        written: list[str] = []  # share URLs of the files this run made
        try:
            db = next((r for r in self._databases(cfg, conn) if r[0] == ctx.unit), None)
            if db is None:
                raise NotFound(f"{cfg.host}: database {ctx.unit} is gone")
            name, recovery, state, _size = db
            if state != "ONLINE":
                raise DobaasError(f"{cfg.host}: database {name} is {state.lower()}: it cannot be backed up")
            capture = self._backups(cfg, conn, files, name, recovery, checkpoint or {}, written)
            yield capture
        finally:
            for url in written:  # published or not, the share keeps nothing (the vault has it, or the run failed)
                try:
                    files.remove(url)
                except Exception:
                    pass
            files.close()
            conn.close()

    def _backups(self, cfg: MssqlConfig, conn: Connection, files: SmbFiles, name: str, recovery: str,
                 token: dict, written: list[str]) -> Capture:
        warnings: list[str] = []
        after = int(token.get("backup_set_id") or 0)
        ours = (cfg.share_path.rstrip("\\") + "\\dobaas\\").lower()
        broken = None
        for b in map(_row, conn.rows(HISTORY.format(db=quote_str(name), after=after))):
            if b["device"].lower().startswith(ours) or b["copy_only"]:
                continue
            if b["type"] in ("D", "L"):
                broken = (f"a {'full' if b['type'] == 'D' else 'log'} backup taken outside Do'BaaS by {b['user']} "
                          f"to {b['device']} broke the chain")
        runs = int(token.get("runs_since_full", 0)) + 1
        full = not token.get("full") or runs >= cfg.full_every or broken is not None
        if broken:
            warnings.append(f"{name}: {broken}: full backup taken")
        stamp = time.strftime("%Y%m%d-%H%M%S") + f"-{time.monotonic_ns() % 10**6:06d}"
        base = f"{cfg.share_path.rstrip(chr(92))}\\dobaas\\{name}"
        url_base = f"{cfg.share.rstrip('/')}/dobaas/{name}"
        opts = ["CHECKSUM", "INIT", "FORMAT"] + (["COPY_ONLY"] if cfg.copy_only else []) + \
            (["COMPRESSION"] if cfg.compression else [])
        streams: list[Stream] = []
        chain: dict[str, Any] = {"full": token.get("full"), "diff": None, "logs": list(token.get("logs") or [])}
        kind = "full" if full else "diff"
        path = f"{base}\\{stamp}-{kind}.bak"
        written.append(f"{url_base}/{stamp}-{kind}.bak")  # before: a backup cut half-way leaves half a file
        conn.execute(f"BACKUP DATABASE {quote_name(name)} TO DISK = {quote_str(path)} WITH "
                     + ", ".join(opts + ([] if full else ["DIFFERENTIAL"])))
        if full:
            chain["logs"] = []
        log_path = None
        if recovery != "SIMPLE" and cfg.log_every_run and not cfg.copy_only:
            log_path = f"{base}\\{stamp}-log.trn"
            written.append(f"{url_base}/{stamp}-log.trn")
            conn.execute(f"BACKUP LOG {quote_name(name)} TO DISK = {quote_str(log_path)} WITH "
                         + ", ".join(["CHECKSUM", "INIT", "FORMAT"] + (["COMPRESSION"] if cfg.compression else [])))
        elif recovery == "SIMPLE":
            warnings.append(f"{name}: SIMPLE recovery model: no log backups, so no point-in-time restore (only to "
                            "the instant of each snapshot)")
        mine = {b["device"].lower(): b for b in map(_row, conn.rows(HISTORY.format(db=quote_str(name), after=after)))}
        last_id = max([after, *(b["id"] for b in mine.values())])
        main = mine.get(path.lower())
        if main is None:
            raise DobaasError(f"{name}: the backup just taken is not in msdb's history")
        record = {k: main[k] for k in ("first_lsn", "last_lsn", "checkpoint_lsn", "differential_base_lsn",
                                       "finished")}
        if full:
            chain["full"] = {"item": "full.bak", **record}
            streams.append(ByteStream("full.bak", files.open_read(written[0])))
        else:
            chain["diff"] = {"item": "diff.bak", **record}
            streams.append(CarriedItem("full.bak", "full.bak"))
            streams.append(ByteStream("diff.bak", files.open_read(written[0])))
        for log in chain["logs"]:
            streams.append(CarriedItem(log["item"], log["item"]))
        if log_path:
            lb = mine[log_path.lower()]
            item = f"log-{len(chain['logs']) + 1:04d}.trn"
            chain["logs"].append({"item": item, **{k: lb[k] for k in ("first_lsn", "last_lsn", "finished")}})
            streams.append(ByteStream(item, files.open_read(written[-1])))
        new_token = {"backup_set_id": last_id, "full": chain["full"], "logs": chain["logs"],
                     "runs_since_full": 0 if full else runs}
        meta = {"database": name, "recovery": recovery, "chain": chain, "backup": "full" if full else "differential",
                "server": {"host": cfg.host, "port": cfg.port, "user": cfg.user, "password_env": cfg.password_env,
                           "password_file": cfg.password_file},
                "share": cfg.share, "share_path": cfg.share_path,
                "share_access": {"user": cfg.share_user, "password_env": cfg.share_password_env,
                                 "password_file": cfg.share_password_file}}
        consistency = "application-consistent (SQL Server backup" + (", log chain)" if log_path else ")")
        return Capture(streams, checkpoint=new_token, consistency=consistency, warnings=warnings, meta=meta)

    def verify_backups(self, meta: dict, items: list[str], write_item: Callable[[str, BinaryIO], int]) -> list[str]:
        from plugins.mssql.restore import verify_backups

        return verify_backups(meta, items, write_item)

    def restore_database(self, meta: dict, items: list[str], write_item: Callable[[str, BinaryIO], int],
                         options: dict) -> dict:
        from plugins.mssql.restore import restore

        return restore(meta, items, write_item, options)
