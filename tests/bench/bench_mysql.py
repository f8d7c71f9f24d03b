"""MySQL/MariaDB benchmark: a database of about 1 GiB on a real MariaDB server; dobaas logical and physical full
backups, then a day's worth of changes (1% of rows updated) and the next backups; next to `mariadb-dump
--single-transaction | restic backup --stdin` on the same server in the same run.

Run with ``make bench``. Not part of the test suite."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from tests.bench.bench_image import PASS, bench_setup, du, restic_env, run, run_rss
from tests.mariadb import start_mariadb

MiB = 2**20
ROW = "(id BIGINT PRIMARY KEY, customer INT NOT NULL, sku CHAR(16) NOT NULL, qty INT NOT NULL, " \
      "price DECIMAL(10,2) NOT NULL, note VARCHAR(200) NOT NULL, created DATETIME NOT NULL, KEY (customer))"


def main() -> int:
    def add_args(ap: argparse.ArgumentParser) -> None:
        ap.add_argument("--rows", type=int, default=4_000_000, help="rows of about 200 bytes (default ~1 GiB)")

    args, work, dobaas, restic = bench_setup(".bench-mysql", add_args)
    db = start_mariadb()
    try:
        t0 = time.monotonic()
        db.sql(f"CREATE DATABASE sales; CREATE TABLE sales.items {ROW} ENGINE=InnoDB")
        step = 500_000
        for lo in range(0, args.rows, step):
            hi = min(args.rows, lo + step) - 1
            db.sql("INSERT INTO sales.items SELECT seq, seq % 50000, LEFT(MD5(seq), 16), seq % 97, (seq % 100000) "
                   "/ 100, CONCAT(REPEAT(SUBSTR(MD5(seq * 7), 1, 10), 6 + seq % 10), ' order line ', seq), "
                   f"'2026-01-01' + INTERVAL (seq % 300) DAY FROM seq_{lo}_to_{hi}", "sales")
        db.sql("ANALYZE TABLE sales.items")
        size = int(db.sql("SELECT SUM(DATA_LENGTH + INDEX_LENGTH) FROM information_schema.TABLES WHERE "
                          "TABLE_SCHEMA = 'sales'"))
        print(f"# mysql benchmark: MariaDB {db.sql('SELECT VERSION()').strip()}, {args.rows} rows, "
              f"{size / MiB:.0f} MiB of InnoDB data+index, generated in {time.monotonic() - t0:.0f} s, "
              f"{os.cpu_count()} cores")
        env = {"DOBAAS_PASSPHRASE": PASS, "DOBAAS_CATALOG": f"sqlite:///{work}/catalog.db"}
        renv = restic_env(work)
        run([restic, "init"], renv)
        policies = {}
        for mode in ("logical", "physical"):
            vault = os.path.join(work, f"vault-{mode}")
            run([dobaas, "vault", "init", vault], env)
            policies[mode] = (os.path.join(work, f"{mode}.yaml"), vault)
            with open(policies[mode][0], "w") as f:
                json.dump({"policy": mode, "client": "bench", "vault": vault, "sources": [
                    {"name": "sales", "plugin": "mysql", "host": "127.0.0.1", "port": db.port, "user": "root",
                     "databases": ["sales"], "mode": mode, "datadir": f"{db.base}/data",
                     "staging_dir": os.path.join(work, "staging")}]}, f)
        res: dict[str, dict] = {}

        def dobaas_run(mode: str, tag: str) -> None:
            pol, vault = policies[mode]
            before = du(vault)
            wall, rss, out = run_rss([dobaas, "run", pol, "--json"], env)
            src = json.loads(out)["sources"][0]
            assert src["status"] == "ok", src
            res[f"{mode} {tag}"] = {"seconds": wall, "growth": du(vault) - before, "read": src["bytes_read"],
                                    "rss": rss / 1024}

        def restic_run(tag: str) -> None:
            before = du(renv["RESTIC_REPOSITORY"])
            os.sync()
            t = time.monotonic()
            dump = subprocess.Popen(["mariadb-dump", "--no-defaults", "-h127.0.0.1", f"-P{db.port}", "-uroot",
                                     "--single-transaction", "--master-data=2", "--routines", "--triggers",
                                     "--events", "--databases", "sales"], stdout=subprocess.PIPE)
            subprocess.run([restic, "backup", "--quiet", "--stdin", "--stdin-filename", "sales.sql"],
                           stdin=dump.stdout, check=True, env={**os.environ, **renv})
            assert dump.wait() == 0
            res[f"restic {tag}"] = {"seconds": time.monotonic() - t, "growth": du(renv["RESTIC_REPOSITORY"]) - before,
                                    "read": 0, "rss": 0}

        for tag in ("full", "after 1%"):
            if tag != "full":
                t = time.monotonic()
                db.sql("UPDATE sales.items SET qty = qty + 1, note = CONCAT('changed ', note) WHERE id % 100 = 7")
                print(f"changed 1% of the rows in {time.monotonic() - t:.1f} s")
            dobaas_run("logical", tag)
            dobaas_run("physical", tag)
            restic_run(tag)
    finally:
        db.stop()

    print()
    print(f"{'step':20} {'seconds':>8} {'MiB/s':>7} {'vault +MiB':>11} {'read MiB':>9} {'RSS MiB':>8}")
    for tag, r in res.items():
        print(f"{tag:20} {r['seconds']:8.1f} {size / MiB / r['seconds']:7.1f} {r['growth'] / MiB:11.1f} "
              f"{r['read'] / MiB:9.1f} {r['rss']:8.0f}")
    L, P, R = res["logical after 1%"], res["physical after 1%"], res["restic after 1%"]
    print(f"day's change, vault growth: logical {L['growth'] / MiB:.1f} MiB, physical {P['growth'] / MiB:.1f} MiB, "
          f"restic {R['growth'] / MiB:.1f} MiB")
    full = res["restic full"]["seconds"] / res["logical full"]["seconds"]
    print(f"speed vs mariadb-dump | restic: logical full {full:.2f}x, logical after 1% "
          f"{R['seconds'] / L['seconds']:.2f}x, physical after 1% {R['seconds'] / P['seconds']:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
