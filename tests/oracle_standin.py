#!/usr/bin/python3
"""A strict stand-in for Oracle's `rman` on the Oracle test host (no Oracle Database can run here), and
`oramodel`, the test's handle on the modelled database. Installed as $ORACLE_HOME/bin/rman and
/usr/local/bin/oramodel (the same file: it looks at the name it was called by).

The model keeps, per ORACLE_SID, a JSON "database" (state_dir/SID.json): DBID and name, log mode, block change
tracking, the current SCN, committed rows (each with the SCN of its commit), the online redo log and the
archived logs (sequence, first and next SCN), and a model control file listing the backups taken. `rman`
parses only what it was taught, statement by statement, and answers anything else with RMAN-00558 as RMAN
does; it writes backup pieces (deterministic JSON, the content of what they cover) where FORMAT says, and
enforces recovery: a restore to an SCN needs the level 0 and level 1 backups and every archived log between
them and that SCN, else RMAN-06054 names the missing sequence.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sys
from datetime import UTC, datetime

STATE = os.environ.get("ORAMODEL_STATE", "/opt/oracle/model")
RMAN_VERSION = "Recovery Manager: Release 19.0.0.0.0 - Production on {when}\nVersion 19.21.0.0.0\n"


def now() -> str:
    """The database's clock (the model's: UTC), as Oracle's DATE shows it with NLS_DATE_FORMAT set by dobaas."""
    return datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S")


def _path(sid: str) -> str:
    return os.path.join(STATE, f"{sid}.json")


def load(sid: str) -> dict | None:
    try:
        with open(_path(sid)) as f:
            return json.load(f)
    except FileNotFoundError:
        return None


def save(sid: str, db: dict) -> None:
    os.makedirs(STATE, exist_ok=True)
    tmp = _path(sid) + ".tmp"
    with open(tmp, "w") as f:
        json.dump(db, f, sort_keys=True)
    os.replace(tmp, _path(sid))


def new_db(sid: str, name: str, dbid: int) -> dict:
    return {"sid": sid, "name": name, "dbid": dbid, "log_mode": "ARCHIVELOG", "bct": "ENABLED", "open": True,
            "scn": 1000, "rows": [], "seq": 1, "log_first": 1000, "archived": [], "backups": [],
            "arch_dir": f"/opt/oracle/arch/{sid}", "staging_quota": None, "cdb": "NO", "version": "19.0.0.0.0"}


# ---- oramodel: the test's handle -------------------------------------------------------------------------------
def oramodel(args: list[str]) -> int:
    sid, cmd, rest = args[0], args[1], args[2:]
    db = load(sid)
    if cmd == "create":
        db = new_db(sid, rest[0], int(rest[1]))
        os.makedirs(db["arch_dir"], exist_ok=True)
        home = os.environ.get("ORACLE_HOME", "/opt/oracle/product/19c/dbhome_1")
        with open(os.path.join(home, "dbs", f"spfile{sid}.ora"), "w") as f:
            f.write(f"*.db_name='{rest[0]}'\n")
    elif db is None:
        print(f"no database {sid}", file=sys.stderr)
        return 1
    elif cmd == "insert":  # N rows, one commit each
        for _ in range(int(rest[0])):
            db["scn"] += 7
            db["rows"].append({"id": len(db["rows"]) + 1, "scn": db["scn"], "time": now()})
    elif cmd == "switch":
        _switch(db)
    elif cmd == "set":
        db[rest[0]] = json.loads(rest[1])
    elif cmd == "lose-log":  # an archived log deleted behind RMAN's back (rm, another tool)
        for a in db["archived"]:
            if a["seq"] == int(rest[0]):
                os.unlink(a["name"])
    elif cmd == "state":
        print(json.dumps(db, sort_keys=True))
        return 0
    save(sid, db)
    return 0


def _switch(db: dict) -> dict:
    """ALTER SYSTEM ARCHIVE LOG CURRENT: the online log becomes an archived log file."""
    db["scn"] += 1
    log = {"seq": db["seq"], "first": db["log_first"], "next": db["scn"], "first_time": db.get("log_first_time",
           now()), "next_time": now(), "name": os.path.join(db["arch_dir"], f"1_{db['seq']}_{db['dbid']}.arc")}
    rows = [r for r in db["rows"] if log["first"] <= r["scn"] < log["next"]]
    os.makedirs(db["arch_dir"], exist_ok=True)
    with open(log["name"], "w") as f:
        json.dump({"seq": log["seq"], "first": log["first"], "next": log["next"], "rows": rows}, f, sort_keys=True)
    db["archived"].append(log)
    db["seq"] += 1
    db["log_first"], db["log_first_time"] = db["scn"], log["next_time"]
    return log


# ---- rman -----------------------------------------------------------------------------------------------------
class RmanError(Exception):
    def __init__(self, lines: list[str]) -> None:
        super().__init__("\n".join(lines))
        self.lines = lines


def syntax_error(found: str, expecting: str) -> RmanError:
    return RmanError(["RMAN-00571: ===========================================================",
                      "RMAN-00569: =============== ERROR MESSAGE STACK FOLLOWS ===============",
                      "RMAN-00571: ===========================================================",
                      "RMAN-00558: error encountered while parsing input commands",
                      f'RMAN-01009: syntax error: found "{found}": expecting one of: "{expecting}"',
                      "RMAN-01007: at line 1 column 1 file: standard input"])


def failure(*lines: str) -> RmanError:
    return RmanError(["RMAN-00571: ===========================================================",
                      "RMAN-00569: =============== ERROR MESSAGE STACK FOLLOWS ===============",
                      "RMAN-00571: ===========================================================", *lines])


Q = r"'([^']+)'"
GRAMMAR = [
    ("configure_autobackup", re.compile(r"CONFIGURE CONTROLFILE AUTOBACKUP ON")),
    ("configure_autobackup_format", re.compile(
        r"CONFIGURE CONTROLFILE AUTOBACKUP FORMAT FOR DEVICE TYPE DISK TO " + Q)),
    ("backup", re.compile(r"BACKUP INCREMENTAL LEVEL ([01]) DATABASE FORMAT " + Q
                          + r" PLUS ARCHIVELOG FORMAT " + Q)),
    ("crosscheck", re.compile(r"CROSSCHECK ARCHIVELOG ALL")),
    ("delete_archivelog", re.compile(r"DELETE NOPROMPT ARCHIVELOG UNTIL SEQUENCE (\d+) THREAD 1")),
    ("startup_nomount", re.compile(r"STARTUP NOMOUNT PFILE=" + Q)),
    ("restore_controlfile", re.compile(r"RESTORE CONTROLFILE FROM " + Q)),
    ("mount", re.compile(r"ALTER DATABASE MOUNT")),
    ("catalog", re.compile(r"CATALOG START WITH " + Q + r" NOPROMPT")),
    ("restore_database", re.compile(r"RESTORE DATABASE")),
    ("recover", re.compile(r"RECOVER DATABASE UNTIL SCN (\d+)")),
    ("recover_time", re.compile(r"RECOVER DATABASE UNTIL TIME \"TO_DATE\('(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d)', "
                                r"'YYYY-MM-DD HH24:MI:SS'\)\"")),
    ("open_resetlogs", re.compile(r"ALTER DATABASE OPEN RESETLOGS")),
    ("validate", re.compile(r"RESTORE DATABASE VALIDATE")),
]
KEYWORDS = "allocate, alter, backup, catalog, configure, delete, recover, restore, startup"


def parse(script: str) -> list[tuple[str, tuple[str, ...]]]:
    """Statements ended by ';', each matching one taught form exactly (keywords as the plugin writes them:
    upper case)."""
    out = []
    body = "\n".join(line for line in script.splitlines() if not line.strip().startswith("#"))
    statements = [s.strip() for s in body.split(";")]
    if statements and statements[-1]:
        raise syntax_error("end-of-file", ";")
    for stmt in statements[:-1]:
        text = " ".join(stmt.split())
        if not text:
            continue
        for kind, rx in GRAMMAR:
            m = rx.fullmatch(text)
            if m:
                out.append((kind, m.groups()))
                break
        else:
            raise syntax_error(text.split()[0].lower(), KEYWORDS)
    return out


def piece_name(fmt: str, db: dict, n: int) -> str:
    unique = hashlib.sha1(f"{db['dbid']}-{db['scn']}-{n}".encode()).hexdigest()[:8]
    return fmt.replace("%U", f"{unique}_{n}_1").replace("%d", db["name"])


def write_piece(path: str, doc: dict, db: dict) -> int:
    data = json.dumps(doc, sort_keys=True).encode() + b"\n" + bytes(4096)  # the padding real pieces have
    quota = db.get("staging_quota")
    if quota is not None:
        used = sum(os.path.getsize(os.path.join(os.path.dirname(path), f))
                   for f in os.listdir(os.path.dirname(path)))
        if used + len(data) > quota:
            raise failure("RMAN-03009: failure of backup command on ORA_DISK_1 channel at "
                          + datetime.now(UTC).strftime("%m/%d/%Y %H:%M:%S"),
                          f"ORA-19502: write error on file \"{path}\", block number 1 (block size=8192)",
                          "ORA-27072: File I/O error",
                          "Additional information: 4",
                          "Additional information: 1")
    with open(path, "wb") as f:
        f.write(data)
    return len(data)


def run_backup(db: dict, level: int, fmt: str, arch_fmt: str, out: list[str], autobackup: str | None) -> None:
    if db["log_mode"] != "ARCHIVELOG":
        raise failure("RMAN-03002: failure of backup plus archivelog command at "
                      + datetime.now(UTC).strftime("%m/%d/%Y %H:%M:%S"),
                      "ORA-19602: cannot backup or copy active file in NOARCHIVELOG mode")
    n = 1
    tag = "TAG" + datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    out.append(f"Starting backup at {datetime.now(UTC):%d-%b-%y}".upper())
    out.append("current log archived")

    def backup_logs() -> None:
        nonlocal n
        todo = [a for a in db["archived"] if not a.get("backed_up") and not a.get("expired")]
        for a in todo:
            if not os.path.exists(a["name"]):
                raise failure("RMAN-03002: failure of backup plus archivelog command",
                              "RMAN-06059: expected archived log not found, loss of archived log compromises "
                              "recoverability",
                              f"ORA-19625: error identifying file {a['name']}",
                              "ORA-27037: unable to obtain file status")
        if not todo:
            return
        path = piece_name(arch_fmt, db, n)
        logs = []
        for a in todo:
            with open(a["name"]) as f:
                logs.append(json.load(f))
            out.append(f"input archived log thread=1 sequence={a['seq']} RECID={a['seq']} STAMP={a['next']}")
        write_piece(path, {"kind": "archivelog", "dbid": db["dbid"], "logs": logs}, db)
        for a in todo:
            a["backed_up"] = True
        db["backups"].append({"kind": "archivelog", "piece": path, "seqs": [a["seq"] for a in todo]})
        out.append(f"piece handle={path} tag={tag} comment=NONE")
        n += 1

    _switch(db)
    backup_logs()
    ckpt = db["scn"]
    base = 0
    if level == 1:
        levels = [b for b in db["backups"] if b["kind"] == "datafile"]
        if not levels:
            out.append("no parent backup or copy of datafile 1 found")
            level = 0
        else:
            base = levels[-1]["ckpt"]
    rows = [r for r in db["rows"] if base < r["scn"] <= ckpt]
    path = piece_name(fmt, db, n)
    out.append(f"channel ORA_DISK_1: starting incremental level {level} datafile backup set")
    out.append("input datafile file number=00001 name=/u01/oradata/" + db["name"] + "/system01.dbf")
    write_piece(path, {"kind": "datafile", "dbid": db["dbid"], "level": level, "base": base, "ckpt": ckpt,
                       "rows": rows, "bct": db["bct"]}, db)
    db["backups"].append({"kind": "datafile", "piece": path, "level": level, "base": base, "ckpt": ckpt,
                          "ckpt_time": now()})
    out.append(f"piece handle={path} tag={tag} comment=NONE")
    n += 1
    _switch(db)
    backup_logs()
    out.append(f"Finished backup at {datetime.now(UTC):%d-%b-%y}".upper())
    if autobackup:
        cf = autobackup.replace("%F", f"c-{db['dbid']}-{datetime.now(UTC):%Y%m%d}-{len(db['backups']):02x}")
        out.append(f"Starting Control File and SPFILE Autobackup at {datetime.now(UTC):%d-%b-%y}".upper())
        write_piece(cf, {"kind": "controlfile", "dbid": db["dbid"], "name": db["name"],
                         "archived": db["archived"], "backups": db["backups"]}, db)
        out.append(f"piece handle={cf} comment=NONE")
        out.append(f"Finished Control File and SPFILE Autobackup at {datetime.now(UTC):%d-%b-%y}".upper())


def recover(inst: dict, until: int) -> list[dict]:
    """The rows as of SCN ``until`` from the catalogued pieces: level 0, the level 1s, then archived logs."""
    pieces = inst["catalog"]
    full = [p for p in pieces if p["kind"] == "datafile" and p["level"] == 0 and p["ckpt"] <= until]
    if not full:
        raise failure("RMAN-03002: failure of restore command",
                      "RMAN-06026: some targets not found - aborting restore",
                      "RMAN-06023: no backup or copy of datafile 1 found to restore")
    f0 = full[-1]
    rows = {r["id"]: r for r in f0["rows"]}
    ckpt = f0["ckpt"]
    for inc in sorted((p for p in pieces if p["kind"] == "datafile" and p["level"] == 1), key=lambda p: p["ckpt"]):
        if inc["base"] == ckpt and inc["ckpt"] <= until:
            rows.update({r["id"]: r for r in inc["rows"]})
            ckpt = inc["ckpt"]
    logs = {lg["seq"]: lg for p in pieces if p["kind"] == "archivelog" for lg in p["logs"]}
    scn = ckpt
    while scn < until:
        log = next((lg for lg in logs.values() if lg["first"] <= scn < lg["next"]), None)
        if log is None:
            known = [lg for lg in inst["controlfile"]["archived"] if lg["first"] <= scn < lg["next"]]
            seq = known[0]["seq"] if known else max([lg["seq"] for lg in inst["controlfile"]["archived"]] + [0]) + 1
            raise failure("RMAN-03002: failure of recover command",
                          f"RMAN-06054: media recovery requesting unknown archived log for thread 1 with sequence "
                          f"{seq} and starting SCN of {scn}")
        rows.update({r["id"]: r for r in log["rows"] if r["scn"] <= until})
        scn = log["next"]
    return sorted((r for r in rows.values() if r["scn"] <= until), key=lambda r: r["id"])


def scn_at(inst: dict, when: str) -> int:
    """UNTIL TIME: recovery stops before the first change committed after ``when``."""
    rows = [r for p in inst["catalog"] for r in p.get("rows", [])]
    rows += [r for p in inst["catalog"] if p["kind"] == "archivelog" for lg in p["logs"] for r in lg["rows"]]
    later = [r["scn"] for r in rows if r["time"] > when]
    last = max([p["ckpt"] for p in inst["catalog"] if p["kind"] == "datafile"] + [0])
    return min(later) - 1 if later else max([r["scn"] for r in rows] + [last])


def rman(argv: list[str]) -> int:
    sid = os.environ.get("ORACLE_SID", "")
    home = os.environ.get("ORACLE_HOME", "")
    print(RMAN_VERSION.format(when=datetime.now(UTC).strftime("%a %b %d %H:%M:%S %Y")))
    if argv != ["target", "/"] or not home or not sid:
        print('RMAN-00554: initialization of internal recovery manager package failed\n'
              'RMAN-04005: error from target database:\nORA-01034: ORACLE not available')
        return 1
    try:
        stmts = parse(sys.stdin.read())
    except RmanError as e:
        print("\n".join(e.lines))
        print("\nRecovery Manager complete.")
        return 1
    db = load(sid)
    inst_path = os.path.join(STATE, f"{sid}.instance.json")
    inst = None
    if os.path.exists(inst_path):
        with open(inst_path) as f:
            inst = json.load(f)
    if db is None and inst is None and stmts and stmts[0][0] != "startup_nomount":
        print("connected to target database (not started)")
        print("\n".join(failure("RMAN-03002: failure of " + stmts[0][0].replace("_", " ") + " command",
                                "ORA-01034: ORACLE not available").lines))
        return 1
    if db is not None:
        print(f"connected to target database: {db['name']} (DBID={db['dbid']})")
    out: list[str] = []
    autobackup_fmt = None
    try:
        for kind, args in stmts:
            if kind == "configure_autobackup":
                out.append("new RMAN configuration parameters are successfully stored")
            elif kind == "configure_autobackup_format":
                autobackup_fmt = args[0]
                out.append("new RMAN configuration parameters are successfully stored")
            elif kind == "backup":
                assert db is not None
                run_backup(db, int(args[0]), args[1], args[2], out, autobackup_fmt)
                save(sid, db)
            elif kind == "crosscheck":
                assert db is not None
                for a in db["archived"]:
                    if os.path.exists(a["name"]) or a.get("deleted"):
                        out.append(f"validation succeeded for archived log\narchived log file name={a['name']} "
                                   f"RECID={a['seq']} STAMP={a['next']}")
                    else:
                        a["expired"] = True
                        out.append(f"validation failed for archived log\narchived log file name={a['name']} "
                                   f"RECID={a['seq']} STAMP={a['next']}")
                save(sid, db)
            elif kind == "delete_archivelog":
                assert db is not None
                for a in db["archived"]:
                    if a["seq"] < int(args[0]) and os.path.exists(a["name"]):
                        os.unlink(a["name"])
                        a["deleted"] = True
                        out.append(f"deleted archived log\narchived log file name={a['name']} RECID={a['seq']}")
                save(sid, db)
            elif kind == "startup_nomount":
                if db is not None or os.path.exists(os.path.join(home, "dbs", f"spfile{sid}.ora")):
                    raise failure("RMAN-03002: failure of startup command",
                                  "ORA-01081: cannot start already-running ORACLE - shut it down first")
                if not os.path.exists(args[0]):
                    raise failure("RMAN-03002: failure of startup command",
                                  f"LRM-00109: could not open parameter file '{args[0]}'",
                                  "ORA-01078: failure in processing system parameters")
                inst = {"state": "NOMOUNT", "catalog": [], "controlfile": None}
                out.append("Oracle instance started")
            elif kind == "validate" and db is not None and db.get("open"):
                out.append("channel ORA_DISK_1: validation complete")
            elif inst is None:
                raise failure(f"RMAN-03002: failure of {kind.replace('_', ' ')} command",
                              "ORA-01034: ORACLE not available")
            elif kind == "restore_controlfile":
                with open(args[0]) as f:
                    cf = json.loads(f.readline())
                if cf.get("kind") != "controlfile":
                    raise failure("RMAN-03002: failure of restore command",
                                  f"ORA-19870: error while restoring backup piece {args[0]}",
                                  "ORA-19563: control file header validation failed")
                inst["controlfile"] = cf
                out.append("channel ORA_DISK_1: restoring control file\noutput file name=/u01/oradata/" + sid
                           + "/control01.ctl")
            elif kind == "mount":
                if not inst.get("controlfile"):
                    raise failure("RMAN-03002: failure of alter db command", "ORA-00205: error in identifying "
                                  "control file, check alert log for more info")
                inst["state"] = "MOUNTED"
                out.append("Statement processed")
            elif kind == "catalog":
                for f in sorted(os.listdir(args[0])):
                    p = os.path.join(args[0], f)
                    try:
                        with open(p) as fh:
                            doc = json.loads(fh.readline())
                    except (ValueError, UnicodeDecodeError, IsADirectoryError):
                        out.append(f"List of Files Which Were Not Cataloged\nFile Name: {p}\n"
                                   "  RMAN-07518: Reason: Foreign database file DBID: 0  Database Name: ")
                        continue
                    if doc.get("dbid") != inst["controlfile"]["dbid"]:
                        continue
                    inst["catalog"].append(doc)
                    out.append(f"File Name: {p}")
                out.append("cataloging done")
            elif kind == "restore_database":
                if inst.get("state") != "MOUNTED":
                    raise failure("RMAN-03002: failure of restore command", "ORA-01507: database not mounted")
                out.append("channel ORA_DISK_1: restore complete")
            elif kind in ("recover", "recover_time"):
                until = int(args[0]) if kind == "recover" else scn_at(inst, args[0])
                inst["rows"] = recover(inst, until)
                inst["until"] = until
                out.append("media recovery complete")
            elif kind == "open_resetlogs":
                if "rows" not in inst:
                    raise failure("RMAN-03002: failure of alter db command",
                                  "ORA-01152: file 1 was not restored from a sufficiently old backup")
                cf = inst["controlfile"]
                new = new_db(sid, cf["name"], cf["dbid"])
                new.update(rows=inst["rows"], scn=inst["until"] + 1, log_first=inst["until"] + 1,
                           archived=[], backups=[], arch_dir=f"/opt/oracle/arch/{sid}")
                save(sid, new)
                with open(os.path.join(home, "dbs", f"spfile{sid}.ora"), "w") as f:
                    f.write(f"*.db_name='{cf['name']}'\n")
                os.unlink(inst_path)
                inst = None
                out.append("Statement processed")
            if inst is not None:
                with open(inst_path, "w") as f:
                    json.dump(inst, f)
    except RmanError as e:
        print("\n".join(out))
        print("\n".join(e.lines))
        print("\nRecovery Manager complete.")
        return 1
    print("\n".join(out))
    print("\nRecovery Manager complete.")
    return 0


if __name__ == "__main__":
    name = os.path.basename(sys.argv[0])
    if name == "oramodel":
        sys.exit(oramodel(sys.argv[1:]))
    sys.exit(rman(sys.argv[1:]))

