"""Proof that a restored data directory is a working database: a throwaway server is started on it (no
network, its own socket), every table is checked (CHECK TABLE) and counted, then the server is stopped."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time

from orchestrator.plugin.errors import DobaasError, IntegrityError

START_TIMEOUT = 60.0


def physical_check(datadir: str) -> dict:
    run = tempfile.mkdtemp(prefix="dobaas-verify-")
    sock = os.path.join(run, "sock")
    proc = subprocess.Popen(["mariadbd", "--no-defaults", f"--datadir={datadir}", f"--socket={sock}",
                             "--skip-networking", "--user=root", f"--log-error={run}/err.log", f"--pid-file={run}/pid",
                             "--skip-log-bin", "--innodb-buffer-pool-size=64M"],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    client = ["mariadb", "--no-defaults", "-uroot", f"--socket={sock}", "-N", "-B", "-e"]
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while subprocess.run([*client, "SELECT 1"], capture_output=True).returncode != 0:
            if proc.poll() is not None or time.monotonic() > deadline:
                log = open(f"{run}/err.log", encoding="utf-8", errors="replace").read()[-500:]  # noqa: SIM115
                raise DobaasError(f"a server did not start on the restored data directory: {log.strip()}")
            time.sleep(0.2)
        tables = subprocess.run([*client, "SELECT CONCAT('`', TABLE_SCHEMA, '`.`', TABLE_NAME, '`') FROM "
                                 "information_schema.TABLES WHERE TABLE_TYPE = 'BASE TABLE' AND TABLE_SCHEMA NOT IN "
                                 "('mysql', 'information_schema', 'performance_schema', 'sys')"],
                                capture_output=True, text=True, check=True).stdout.split()
        rows, bad = {}, []
        for t in tables:
            check = subprocess.run([*client, f"CHECK TABLE {t}"], capture_output=True, text=True).stdout
            if not check.strip().endswith("OK"):
                bad.append(f"{t}: {check.strip().splitlines()[-1] if check.strip() else 'no answer'}")
            rows[t.replace("`", "")] = int(subprocess.run([*client, f"SELECT COUNT(*) FROM {t}"], capture_output=True,
                                                          text=True, check=True).stdout)
        if bad:
            raise IntegrityError(f"restored data directory has damaged tables: {'; '.join(bad)}")
        return {"tables": len(tables), "rows": rows,
                "verified": "a server started on the restored data directory; CHECK TABLE OK on every table"}
    finally:
        proc.terminate()
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        shutil.rmtree(run, ignore_errors=True)
