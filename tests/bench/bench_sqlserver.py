"""SQL Server benchmark against the TDS double and the real Samba share: two weeks of nightly runs of one
database (a full every 7 runs, differentials between, a log backup each run; 2,000 committed rows a day on a
database whose full backup is 64 MiB of data pages), then a point-in-time restore from the last snapshot.
Reports what SQL Server wrote to the share against what the vault grew by (the second week's full dedups against
the first), and the time to plan and run the point-in-time restore (files streamed back to the share, RESTORE
… STOPAT, DBCC CHECKDB). The model answers on loopback: the figures measure our side, not a real server's I/O.
Run with ``make bench``."""

from __future__ import annotations

import json
import os
import sys
import time
from datetime import datetime
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from tests.bench.bench_image import PASS, bench_setup, du, run
from tests.mssql_model import Instance, start_instance
from tests.samba import run_samba, share_folder

MiB = 2**20
USER, PASSWORD = "backup", "Sql-bench-pass-1"
SHARE_PATH = "\\\\proxy\\sqlbackup"


def main() -> int:
    args, work, dobaas, _restic = bench_setup(".bench-sqlserver", lambda ap: ap.add_argument(
        "--days", type=int, default=14, help="nightly runs"))
    with run_samba() as smb:
        folder, share_dir = share_folder(smb.share_dir, "sql")
        inst = Instance(SHARE_PATH, share_dir)
        port, server = start_instance(inst, {USER: PASSWORD})
        db = inst.add("erp")
        db.pages = 64 * 1024
        env = {"DOBAAS_PASSPHRASE": PASS, "DOBAAS_CATALOG": f"sqlite:///{work}/catalog.db", "SQL_PASSWORD": PASSWORD,
               "SMB_PASSWORD": smb.password}
        vault = os.path.join(work, "vault")
        run([dobaas, "vault", "init", vault], env)
        policy = os.path.join(work, "sql.yaml")
        Path(policy).write_text(json.dumps({"policy": "bench", "client": "bench", "vault": vault, "sources": [{
            "name": "sql", "plugin": "mssql", "host": "127.0.0.1", "port": port, "user": USER,
            "password_env": "SQL_PASSWORD", "databases": ["erp"], "share": smb.url(folder), "share_path": SHARE_PATH,
            "share_user": smb.user, "share_password_env": "SMB_PASSWORD", "full_every": 7}]}))
        written, rows_print, marks = 0, [], []
        for day in range(args.days):
            for i in range(2000):
                inst.insert(db, f"day{day}-row{i}")
            marks.append((inst.clock, len(db.rows)))
            before_files = _share_bytes(share_dir)
            before = du(vault)
            t0 = time.monotonic()
            out = json.loads(run([dobaas, "run", policy, "--json"], env)[2])
            src = out["sources"][0]
            assert src["status"] == "ok", src
            made = src["bytes_read"]
            written += made
            kind = {"D": "full", "I": "differential"}[next(b["type"] for b in reversed(inst.backupset)
                                                           if b["type"] != "L")]
            rows_print.append((day + 1, kind, made, du(vault) - before, time.monotonic() - t0))
            assert _share_bytes(share_dir) == before_files == 0
        sid = src["snapshot"]
        t, count = marks[-3]
        at = datetime.fromtimestamp(t + 30).strftime("%Y-%m-%d %H:%M:%S")
        t0 = time.monotonic()
        res = json.loads(run([dobaas, "restore", "mssql", sid[:12], "--vault", vault, "--as-database", "erp_pit",
                              "--to-time", at, "--json"], env)[2])
        restore_s = time.monotonic() - t0
        ok_rows = inst.databases["erp_pit"].rows == [list(r) for r in db.rows[:count]]
        server.shutdown()
    print(f"# SQL Server benchmark: {args.days} nightly runs of one database (64 MiB of data pages, 2,000 rows a "
          "day), full_every 7, through the TDS double and the Samba share, 2 cores")
    print(f"{'run':>4} {'mode':12} {'backup MiB':>11} {'vault +MiB':>11} {'seconds':>8}")
    for d, mode, made, grew, secs in rows_print:
        print(f"{d:4} {mode:12} {made / MiB:11.2f} {grew / MiB:11.2f} {secs:8.2f}")
    stored = du(vault)
    print(f"backup files written by SQL Server: {written / MiB:.1f} MiB; vault size: {stored / MiB:.1f} MiB "
          f"({written / max(stored, 1):.1f}x less)")
    fulls = [r for r in rows_print if r[1] == "full"]
    if len(fulls) > 1:
        print(f"second full: {fulls[1][2] / MiB:.1f} MiB written, vault +{fulls[1][3] / MiB:.2f} MiB (dedup)")
    print(f"point-in-time restore from the last snapshot ({len(res['backups_applied'])} backups: "
          f"{', '.join(res['backups_applied'])}): {restore_s:.2f} s, rows as of then: {ok_rows}")
    return 0 if ok_rows else 1


def _share_bytes(share_dir: str) -> int:
    return sum(p.stat().st_size for p in Path(share_dir).rglob("*") if p.is_file())


if __name__ == "__main__":
    sys.exit(main())
