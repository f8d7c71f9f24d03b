"""``plugin: mysql``: MySQL/MariaDB databases.

Logical mode: one ``START TRANSACTION WITH CONSISTENT SNAPSHOT`` for every selected database (no global lock),
one dump item per database (``dump/<db>.sql``), CHECKSUM TABLE and row counts recorded inside that same
transaction, and the binary logs written since the previous snapshot (``binlog/<file>``) so a restore can stop
at any point in time. The previous snapshot's dumps are carried along (``previous/dump/<db>.sql``, references
only) so each snapshot alone can restore any instant between the previous snapshot and itself.
"""

from __future__ import annotations

import io
import logging
import os
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from typing import Literal

from pydantic import Field

from orchestrator.plugin.base import CaptureContext, PasswordFields, SourceConfig, SourcePlugin
from orchestrator.plugin.export import ExportPart, Items
from orchestrator.plugin.streams import ByteStream, Capture, CarriedItem, IterReader
from plugins.mysql import binlogs, export, restore
from plugins.mysql.connection import Endpoint, server_variable
from plugins.mysql.dump import SnapshotDump
from plugins.mysql.physical import PhysicalRun

log = logging.getLogger(__name__)


class MysqlConfig(SourceConfig, PasswordFields):
    host: str = "127.0.0.1"
    port: int = Field(default=3306, ge=1, le=65535)
    socket: str | None = None
    user: str = "root"
    databases: list[str] = Field(default_factory=list)  # names or globs; default: all but the system schemas
    mode: Literal["logical", "physical"] = "logical"
    binlogs: bool = True  # archive the binary logs for point-in-time restore
    users_and_grants: bool = False  # also capture accounts and grants (users.sql; restored with --with-users)
    staging_dir: str = "/var/tmp/dobaas-mysql"  # binary logs of one run, at most
    datadir: str | None = None  # physical mode: the server's data directory (default: asked from the server)
    full_every: int = Field(default=7, ge=1, le=100)  # physical mode: a full backup after this many snapshots

    def endpoint(self) -> Endpoint:
        return Endpoint(self.host, self.port, self.socket, self.user, self.password())


class MysqlPlugin(SourcePlugin):
    name = "mysql"
    Config = MysqlConfig

    def export_parts(self, meta: dict, items: Items, tree_format: str, image_format: str) -> list[ExportPart]:
        return export.export_parts(meta, items, tree_format, image_format)

    def restore_database(self, meta: dict, items: list[str], write_item, options: dict) -> dict:
        return restore.restore(meta, items, write_item, restore.options_from_command(options))

    def discover(self, cfg: MysqlConfig) -> list[str]:
        d = SnapshotDump(cfg.endpoint())
        d.open()
        try:
            return d.databases(cfg.databases)
        finally:
            d.close()

    @contextmanager
    def capture(self, cfg: MysqlConfig, checkpoint: dict | None, ctx: CaptureContext) -> Iterator[Capture]:
        ep = cfg.endpoint()
        if cfg.mode == "physical":
            yield from self._physical(cfg, ep, checkpoint)
            return
        warnings: list[str] = []
        with ExitStack() as stack:
            d = SnapshotDump(ep)
            stack.callback(d.close)
            rotated = d.open(rotate_binlog=cfg.binlogs)
            assert d.coords is not None
            if rotated and d.coords.file:
                warnings.append(rotated)
            dbs = d.databases(cfg.databases)
            version = d.query("SELECT VERSION()")[0][0]
            meta: dict = {"server": ep.describe(), "server_version": version, "databases": dbs,
                          "snapshot_time": d.coords.time, "tables": d.tables, "mode": "logical",
                          "charsets": d.charsets(dbs)}
            streams: list = []
            if not d.coords.file:
                warnings.append("binary logging is disabled on the server (log_bin): point-in-time restore is "
                                "unavailable; only the snapshot's own instant can be restored")
            else:
                meta["binlog"] = {"file": d.coords.file, "pos": d.coords.pos, "gtid": d.coords.gtid}
                if cfg.binlogs:
                    streams += self._binlogs(ep, d, cfg, checkpoint, meta, warnings, stack)
            for db in dbs:
                streams.append(ByteStream(f"dump/{db}.sql", IterReader(self._dump_then_checksum(d, db))))
            if cfg.users_and_grants:
                streams.append(ByteStream("users.sql", IterReader(d.users())))
            token = {"binlog_file": d.coords.file, "binlog_pos": d.coords.pos, "time": d.coords.time,
                     "databases": dbs} if d.coords.file else None
            yield Capture(streams, token, "transaction-consistent (one consistent snapshot, no global lock)",
                          warnings, meta)

    def _physical(self, cfg: MysqlConfig, ep: Endpoint, checkpoint: dict | None) -> Iterator[Capture]:
        chain: list[str] = []
        lsn = None
        warnings: list[str] = []
        if checkpoint and checkpoint.get("mode") == "physical" and checkpoint.get("to_lsn"):
            if len(checkpoint.get("chain", [])) < cfg.full_every:
                chain, lsn = list(checkpoint["chain"]), int(checkpoint["to_lsn"])
        elif checkpoint:
            warnings.append("the previous snapshot was not a physical backup: full backup")
        name = f"physical/{len(chain):02d}-{'incremental' if chain else 'full'}.xbstream"
        datadir = cfg.datadir
        if datadir is None:  # mariabackup reads the files itself: it must run where they are
            datadir = server_variable(ep, "datadir")
        run = PhysicalRun(ep, datadir, cfg.staging_dir, lsn)
        token: dict = {}
        meta: dict = {"server": ep.describe(), "mode": "physical", "chain": [*chain, name]}

        def stream() -> Iterator[bytes]:
            yield from run.stream()
            token.update(mode="physical", to_lsn=run.info["to_lsn"], chain=[*chain, name])
            meta.update(lsn={"from": run.info["from_lsn"], "to": run.info["to_lsn"]}, binlog=run.info["binlog"])

        streams: list = [CarriedItem(n, n) for n in chain]
        streams.append(ByteStream(name, IterReader(stream())))
        yield Capture(streams, token, "crash-consistent InnoDB files + redo (mariabackup BACKUP STAGE)", warnings,
                      meta)

    @staticmethod
    def _dump_then_checksum(d: SnapshotDump, db: str) -> Iterator[bytes]:
        yield from d.dump(db)
        d.record_checksums(db)  # still inside the snapshot: the values the restore is checked against

    def _binlogs(self, ep: Endpoint, d: SnapshotDump, cfg: MysqlConfig, checkpoint: dict | None, meta: dict,
                 warnings: list[str], stack: ExitStack) -> list:
        """The logs from the previous snapshot's position to this one's, and the previous dumps they apply to."""
        assert d.coords is not None
        if not checkpoint or not checkpoint.get("binlog_file"):
            return []  # first snapshot of the chain: nothing to replay yet
        sizes = {r[0] or "": int(r[1] or 0) for r in d.query("SHOW BINARY LOGS")}
        try:
            fetched = binlogs.fetch(ep, checkpoint["binlog_file"], d.coords.file, d.coords.pos, sizes,
                                    cfg.staging_dir)
        except binlogs.BinlogPurged as e:
            warnings.append(str(e))
            return []
        stack.callback(fetched.cleanup)
        meta["previous"] = {"binlog": {"file": checkpoint["binlog_file"], "pos": checkpoint["binlog_pos"]},
                            "time": checkpoint["time"], "databases": checkpoint.get("databases", [])}
        meta["binlog_files"] = fetched.files
        streams: list = [CarriedItem(f"previous/dump/{db}.sql", f"dump/{db}.sql")
                         for db in checkpoint.get("databases", [])]
        for f in fetched.files:
            streams.append(ByteStream(f"binlog/{f}", _FileReader(os.path.join(fetched.dir, f))))
        return streams


class _FileReader:
    """Opened on first read, so a staged log is open only while the core reads it."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.f: io.BufferedReader | None = None

    def readinto(self, b: memoryview) -> int:
        if self.f is None:
            self.f = open(self.path, "rb")  # noqa: SIM115  (closed at the end of the stream)
        n = self.f.readinto(b)
        if not n:
            self.f.close()
        return n
