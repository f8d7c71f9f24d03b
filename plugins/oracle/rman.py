"""RMAN over SSH: the scripts dobaas runs (every one listed here, nothing composed elsewhere) and what is read
back from RMAN's output: piece handles, archived-log sequences, and the RMAN-/ORA- error stack, verbatim."""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field

from orchestrator.plugin.errors import DobaasError
from plugins.oracle.remote import Host

PIECE = re.compile(r"^piece handle=(\S+)", re.M)
ARCHIVED = re.compile(r"^input archived log thread=(\d+) sequence=(\d+)", re.M)
EXPIRED = re.compile(r"^validation failed for archived log\narchived log file name=(\S+) RECID=(\d+)", re.M)
ERROR = re.compile(r"^(?:RMAN|ORA|LRM)-\d{5}: .*$", re.M)
STACK_BANNER = ("RMAN-00571", "RMAN-00569")


@dataclass
class RmanRun:
    output: str
    pieces: list[str] = field(default_factory=list)
    archived: list[int] = field(default_factory=list)
    expired: list[int] = field(default_factory=list)


def errors(output: str) -> list[str]:
    """The RMAN-/ORA- lines of an error stack, without RMAN's banner lines."""
    return [m for m in ERROR.findall(output) if not m.startswith(STACK_BANNER)]


def run(host: Host, oracle_home: str, sid: str, script: str, what: str) -> RmanRun:
    """Run ``script`` with ``rman target /`` as the oracle user; raise with RMAN's own error lines on failure."""
    rc, out, err = host.run(f"{shlex.quote(oracle_home + '/bin/rman')} target /", stdin=script,
                            env={"ORACLE_HOME": oracle_home, "ORACLE_SID": sid, "NLS_LANG": "AMERICAN_AMERICA.UTF8",
                                 "NLS_DATE_FORMAT": "YYYY-MM-DD HH24:MI:SS"})
    if rc:
        stack = errors(out + "\n" + err) or [(err or out).strip()[-500:] or f"exit status {rc}"]
        raise DobaasError(f"{host.where}: RMAN {what} failed (ORACLE_SID={sid}): " + "; ".join(stack))
    return RmanRun(out, PIECE.findall(out), [int(s) for _, s in ARCHIVED.findall(out)],
                   [int(r) for _, r in EXPIRED.findall(out)])


def crosscheck() -> str:
    return "CROSSCHECK ARCHIVELOG ALL;\n"


def backup(level: int, run_dir: str) -> str:
    """One backup: database at ``level`` plus the archived logs not backed up yet (RMAN switches the log before
    and after), and the control file + spfile autobackup, every piece into ``run_dir``."""
    return (f"CONFIGURE CONTROLFILE AUTOBACKUP ON;\n"
            f"CONFIGURE CONTROLFILE AUTOBACKUP FORMAT FOR DEVICE TYPE DISK TO '{run_dir}/%F';\n"
            f"BACKUP INCREMENTAL LEVEL {level} DATABASE FORMAT '{run_dir}/df_%U' "
            f"PLUS ARCHIVELOG FORMAT '{run_dir}/al_%U';\n")


def delete_archivelogs(until_sequence: int) -> str:
    """Archived logs below ``until_sequence`` (those a published snapshot holds)."""
    return f"DELETE NOPROMPT ARCHIVELOG UNTIL SEQUENCE {until_sequence} THREAD 1;\n"


def restore(pfile: str, controlfile: str, pieces_dir: str, until_scn: int | None, until_time: str | None = None) -> str:
    """``until_time``: 'YYYY-MM-DD HH:MM:SS' on the database's clock (else ``until_scn``)."""
    until = (f"UNTIL TIME \"TO_DATE('{until_time}', 'YYYY-MM-DD HH24:MI:SS')\"" if until_time
             else f"UNTIL SCN {until_scn}")
    return (f"STARTUP NOMOUNT PFILE='{pfile}';\n"
            f"RESTORE CONTROLFILE FROM '{controlfile}';\n"
            "ALTER DATABASE MOUNT;\n"
            f"CATALOG START WITH '{pieces_dir}/' NOPROMPT;\n"
            "RESTORE DATABASE;\n"
            f"RECOVER DATABASE {until};\n"
            "ALTER DATABASE OPEN RESETLOGS;\n")


def validate() -> str:
    return "RESTORE DATABASE VALIDATE;\n"
