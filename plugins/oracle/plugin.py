"""The oracle source: RMAN level 0 every ``level0_every`` runs and level 1 in between, plus the archived logs
since the last run and the control file autobackup; every piece read over SFTP into the vault. Each snapshot
references its whole chain (level 0, the level 1s, every archived log since, the newest control file), so it
restores alone. The pieces leave the staging directory, and archived logs are deleted (when the policy says
so), only once the snapshot holding them is published."""

from __future__ import annotations

import logging
import posixpath
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from orchestrator.plugin.base import CaptureContext, SourcePlugin
from orchestrator.plugin.errors import BadInput, DobaasError
from orchestrator.plugin.export import ExportPart, Items
from orchestrator.plugin.streams import ByteStream, Capture, CarriedItem, Stream
from plugins.oracle import discovery, export, rman
from plugins.oracle.config import OracleConfig
from plugins.oracle.remote import Host

log = logging.getLogger(__name__)


def open_host(ssh: Any) -> Host:
    return Host(ssh.host, ssh.port, ssh.user, ssh.identity_file, ssh.known_hosts)


class OraclePlugin(SourcePlugin):
    name = "oracle"
    Config = OracleConfig

    def discover(self, cfg: OracleConfig) -> list[str]:
        conn = discovery.connect(cfg.dsn, cfg.user, cfg.password())
        try:
            info = discovery.describe(conn)
        finally:
            conn.close()
        problems = _problems(info)
        return [f"{info.name} (DBID {info.dbid}, {info.version}, {info.log_mode}, block change tracking "
                f"{info.bct}, {info.size // 2**20} MiB" + (f", PDBs {', '.join(info.pdbs)}" if info.pdbs else "")
                + ")", *problems]

    def export_parts(self, meta: dict, items: Items, tree_format: str, image_format: str) -> list[ExportPart]:
        return export.export_parts(meta, items, tree_format, image_format)

    def restore_database(self, meta: dict, items: list[str], write_item: Any, options: dict) -> dict:
        from plugins.oracle.restore import restore

        return restore(meta, items, write_item, options)

    @contextmanager
    def capture(self, cfg: OracleConfig, checkpoint: dict | None, ctx: CaptureContext) -> Iterator[Capture]:
        conn = discovery.connect(cfg.dsn, cfg.user, cfg.password())
        host: Host | None = None
        run_dir = ""
        try:
            info = discovery.describe(conn)
            if info.log_mode != "ARCHIVELOG":
                raise BadInput(f"{info.name} runs in NOARCHIVELOG mode: an online backup is impossible (only a "
                               "consistent backup of the database shut down cleanly and mounted is). Switch it "
                               "to ARCHIVELOG mode (SHUTDOWN IMMEDIATE; STARTUP MOUNT; ALTER DATABASE "
                               "ARCHIVELOG; ALTER DATABASE OPEN) before backing it up with dobaas")
            warnings = _problems(info)
            host = open_host(cfg.ssh)
            chain, level, why = _plan(cfg, checkpoint, info)
            if why:
                warnings.append(why)
            cross = rman.run(host, cfg.oracle_home, cfg.oracle_sid, rman.crosscheck(), "CROSSCHECK")
            last_seq = (checkpoint or {}).get("last_seq", 0) if chain else 0
            lost = sorted(s for s in cross.expired if s > last_seq)
            if lost and level == 1:
                warnings.append(f"archived log sequence(s) {', '.join(map(str, lost))} are gone (deleted outside "
                                "dobaas): the chain since the last level 0 has a gap, so this backup is a level 0 "
                                "starting a new chain; times inside the gap cannot be restored")
                chain, level = [], 0
            prefix = f"{cfg.staging_dir}/dobaas-{ctx.lineage or 'run'}-"
            run_dir = f"{prefix}{int(time.time())}"
            # a run killed earlier (kill -9, power cut) left its folder: nothing in it was published
            host.check(f"rm -rf '{prefix}'* && mkdir -p '{run_dir}'", "preparing the staging directory")
            start_scn = int(discovery.query(conn, discovery.CURRENT_SCN)[0][0])
            res = rman.run(host, cfg.oracle_home, cfg.oracle_sid, rman.backup(level, run_dir),
                           f"BACKUP INCREMENTAL LEVEL {level}")
            pieces = _describe_pieces(conn, res, run_dir)
            logs = [{"seq": int(s), "first": int(f), "next": int(n), "first_time": _db_time(ft),
                     "next_time": _db_time(nt)} for s, f, n, ft, nt in discovery.query(
                conn, discovery.LOGS, lo=min(res.archived), hi=max(res.archived))] if res.archived else []
            new_chain = chain + [p for p in pieces if p["kind"] != "controlfile"]
            control = next((p for p in pieces if p["kind"] == "controlfile"), None)
            if control is None:
                raise DobaasError("RMAN reported no control file autobackup piece; nothing is stored")
            streams: list[Stream] = [CarriedItem(p["item"], p["item"]) for p in chain]
            streams += [ByteStream(p["item"], host.reader(p["path"])) for p in pieces]
            all_logs = (checkpoint or {}).get("logs", []) if chain else []
            all_logs = all_logs + logs
            datafiles = [p for p in new_chain if p["kind"] == "datafile"]
            meta = {"dbid": info.dbid, "name": info.name, "version": info.version, "cdb": info.cdb,
                    "pdbs": info.pdbs, "level": level, "start_scn": start_scn,
                    "chain": [{k: v for k, v in p.items() if k != "path"} for p in new_chain],
                    "controlfile": control["item"], "logs": all_logs,
                    "scn_range": {"from": datafiles[0]["ckpt"] if datafiles else start_scn,
                                  "to": max([lg["next"] for lg in all_logs] + [start_scn]) - 1},
                    # the database host's clock, as Oracle's DATE columns give it
                    "time_range": {"from": datafiles[0]["ckpt_time"] if datafiles else None,
                                   "to": max([lg["next_time"] for lg in all_logs], default=None)},
                    "ssh": cfg.ssh.model_dump(), "oracle_home": cfg.oracle_home, "oracle_sid": cfg.oracle_sid,
                    "staging_dir": cfg.staging_dir, "bct": info.bct}
            token = {"dbid": info.dbid, "chain": meta["chain"], "logs": all_logs,
                     "runs_since_level0": 0 if level == 0 else (checkpoint or {}).get("runs_since_level0", 0) + 1,
                     "last_seq": max([lg["seq"] for lg in all_logs] + [last_seq])}
            published = False
            try:
                yield Capture(streams, token, "application-consistent (RMAN online backup + archived logs)",
                              warnings, meta)
                published = True
            finally:
                self._after(cfg, host, run_dir, published, token["last_seq"])
                run_dir = ""
        finally:
            if host is not None:
                if run_dir:  # failed before the capture was handed over: nothing of this run is kept
                    host.run(f"rm -rf '{run_dir}'")
                host.close()
            conn.close()

    def _after(self, cfg: OracleConfig, host: Host, run_dir: str, published: bool, last_seq: int) -> None:
        """The pieces leave the staging directory whatever happened (a failed run's are not a backup anyone can
        use); archived logs go only when the snapshot holding them is published and the policy says so."""
        host.run(f"rm -rf '{run_dir}'")
        if published and cfg.delete_archivelogs and last_seq:
            try:  # the snapshot is published: a failure here leaves logs behind, it does not undo the backup
                rman.run(host, cfg.oracle_home, cfg.oracle_sid, rman.delete_archivelogs(last_seq + 1),
                         "DELETE ARCHIVELOG")
            except DobaasError as e:
                log.warning("%s: the archived logs were kept: %s", cfg.name, e)


def _db_time(value: Any) -> str:
    """An Oracle DATE (a naive datetime: the database host's clock) as 'YYYY-MM-DD HH:MM:SS'."""
    return value.strftime("%Y-%m-%d %H:%M:%S")


def _problems(info: discovery.DbInfo) -> list[str]:
    out = []
    if info.bct != "ENABLED":
        out.append(f"block change tracking is {info.bct} on {info.name}: level 1 backups work but read every "
                   "block of every datafile; enable it with ALTER DATABASE ENABLE BLOCK CHANGE TRACKING USING "
                   "FILE '<path>/bct.chg'")
    return out


def _plan(cfg: OracleConfig, checkpoint: dict | None, info: discovery.DbInfo) -> tuple[list[dict], int, str]:
    """(the chain this backup extends, its level, why it is a level 0 when a level 1 was due)."""
    if not checkpoint or not checkpoint.get("chain"):
        return [], 0, ""
    if checkpoint.get("dbid") != info.dbid:
        return [], 0, f"the DBID changed ({checkpoint.get('dbid')} -> {info.dbid}): a level 0 starts a new chain"
    if checkpoint.get("runs_since_level0", 0) + 1 >= cfg.level0_every:
        return [], 0, ""
    return list(checkpoint["chain"]), 1, ""


def _describe_pieces(conn: Any, res: rman.RmanRun, run_dir: str) -> list[dict]:
    """Each piece RMAN wrote: its kind, and for datafile pieces the level and SCNs the control file records."""
    out = []
    for path in res.pieces:
        if posixpath.dirname(path) != run_dir:
            raise DobaasError(f"RMAN wrote piece {path} outside the staging directory {run_dir}")
        base = posixpath.basename(path)
        if base.startswith("df_"):
            level, base_scn, ckpt, ckpt_time = discovery.query(conn, discovery.PIECE_SCN, handle=path)[0]
            out.append({"kind": "datafile", "item": f"pieces/{base}", "path": path, "level": int(level),
                        "base": int(base_scn or 0), "ckpt": int(ckpt), "ckpt_time": _db_time(ckpt_time)})
        elif base.startswith("al_"):
            out.append({"kind": "archivelog", "item": f"pieces/{base}", "path": path})
        else:
            out.append({"kind": "controlfile", "item": f"controlfile/{base}", "path": path})
    return out
