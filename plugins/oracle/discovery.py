"""What the database is, read with python-oracledb in thin mode (no Oracle client on the backup server): DBID,
name, version, log mode, block change tracking, CDB and PDBs, size; and after a backup, the SCNs of what it
holds. Every statement the plugin sends is here."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from orchestrator.plugin.errors import DobaasError

DATABASE = "SELECT dbid, name, log_mode, cdb FROM v$database"
VERSION = "SELECT version FROM v$instance"
BCT = "SELECT status FROM v$block_change_tracking"
SIZE = "SELECT NVL(SUM(bytes), 0) FROM v$datafile"
PDBS = "SELECT name FROM v$pdbs ORDER BY name"
CURRENT_SCN = "SELECT current_scn FROM v$database"
LOGS = ("SELECT sequence#, first_change#, next_change#, first_time, next_time FROM v$archived_log WHERE thread# = 1 "
        "AND sequence# >= :lo AND sequence# <= :hi ORDER BY sequence#")
PIECE_SCN = ("SELECT d.incremental_level, d.incremental_change#, d.checkpoint_change#, d.checkpoint_time "
             "FROM v$backup_datafile d "
             "JOIN v$backup_piece p ON p.set_stamp = d.set_stamp AND p.set_count = d.set_count "
             "WHERE p.handle = :handle AND d.file# = 1")


@dataclass
class DbInfo:
    dbid: int
    name: str
    log_mode: str
    cdb: bool
    version: str
    bct: str  # ENABLED | DISABLED
    size: int
    pdbs: list[str] = field(default_factory=list)


def connect(dsn: str, user: str, password: str | None) -> Any:
    """A thin-mode connection (a module-level function: the tests put their strict fake here)."""
    try:
        import oracledb
    except ImportError:
        raise DobaasError("the oracle plugin needs python-oracledb (pip install 'dobaas[oracle]')") from None
    try:
        return oracledb.connect(user=user, password=password, dsn=dsn)
    except oracledb.Error as e:
        raise DobaasError(f"cannot connect to {dsn} as {user}: {e}") from None


def query(conn: Any, sql: str, **binds: Any) -> list[tuple]:
    with conn.cursor() as cur:
        cur.execute(sql, binds)
        return list(cur.fetchall())


def describe(conn: Any) -> DbInfo:
    dbid, name, log_mode, cdb = query(conn, DATABASE)[0]
    bct = query(conn, BCT)
    info = DbInfo(int(dbid), str(name), str(log_mode), cdb == "YES", str(query(conn, VERSION)[0][0]),
                  str(bct[0][0]) if bct else "DISABLED", int(query(conn, SIZE)[0][0]))
    if info.cdb:
        info.pdbs = [r[0] for r in query(conn, PDBS)]
    return info
