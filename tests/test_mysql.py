"""MySQL/MariaDB plugin against a real MariaDB 10.11: one consistent snapshot under concurrent writes, restores
checked with CHECKSUM TABLE, point-in-time restore from archived binary logs, and clear failures."""

from __future__ import annotations

import json
import os
import threading
import time
from datetime import datetime
from pathlib import Path

import pytest
import yaml

from orchestrator.backup.runner import run_policy
from orchestrator.catalog.db import Catalog
from orchestrator.policy.model import load_policy
from orchestrator.vault.backend.local import LocalBackend
from orchestrator.vault.repository import Vault
from tests.conftest import PASS, Cli
from tests.mariadb import MariaDB, start_mariadb

pytestmark = pytest.mark.mysql

SCHEMA = """
CREATE TABLE customers (
  id INT PRIMARY KEY AUTO_INCREMENT, name VARCHAR(100) CHARACTER SET utf8mb4, note TEXT CHARACTER SET latin1,
  photo BLOB, balance DECIMAL(12,2), ratio DOUBLE, flags BIT(5), created DATETIME(6), ts TIMESTAMP NULL,
  kind ENUM('a','b'), tags SET('x','y'), doc JSON, shout VARCHAR(110) AS (CONCAT(name, '!')) VIRTUAL);
CREATE TABLE orders (id INT PRIMARY KEY AUTO_INCREMENT, customer_id INT NOT NULL, total INT NOT NULL DEFAULT 0,
  FOREIGN KEY (customer_id) REFERENCES customers(id));
CREATE TABLE order_lines (id INT PRIMARY KEY AUTO_INCREMENT, order_id INT NOT NULL, amount INT NOT NULL,
  FOREIGN KEY (order_id) REFERENCES orders(id));
CREATE TABLE events_log (id INT PRIMARY KEY AUTO_INCREMENT, label VARCHAR(20));
CREATE VIEW order_totals AS SELECT o.id, SUM(l.amount) AS s FROM orders o JOIN order_lines l ON l.order_id = o.id
  GROUP BY o.id;
CREATE VIEW big_orders AS SELECT id FROM order_totals WHERE s > 5;
DELIMITER ;;
CREATE PROCEDURE add_order(c INT) BEGIN INSERT INTO orders (customer_id) VALUES (c); END;;
CREATE TRIGGER lines_ai AFTER INSERT ON order_lines FOR EACH ROW
  UPDATE orders SET total = total + NEW.amount WHERE id = NEW.order_id;;
CREATE EVENT nightly ON SCHEDULE EVERY 1 DAY DISABLE DO DELETE FROM events_log WHERE id < 0;;
DELIMITER ;
INSERT INTO customers (name, note, photo, balance, ratio, flags, created, ts, kind, tags, doc) VALUES
  ('Zoë Ünïcode ☃', 'caf\xe9 latin1', X'00FF10275C0A0D', 1234.56, 0.1, b'10101', '2026-01-02 03:04:05.678901',
   '2026-05-06 07:08:09', 'b', 'x,y', '{"k": [1, 2, "\\\\u00e9"]}'),
  ('O''Brien \\\\ "quote"', NULL, NULL, -0.01, 1e-300, b'0', '1999-12-31 23:59:59', NULL, 'a', '', NULL);
"""


def load_schema(db: MariaDB, name: str) -> None:
    db.sql(f"CREATE DATABASE {name} CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci")
    import subprocess

    subprocess.run(["mariadb", "--no-defaults", "-h127.0.0.1", f"-P{db.port}", "-uroot", name],
                   input=SCHEMA.replace("\\xe9", "\u00e9").encode("utf-8"), check=True, capture_output=True)


class Writer(threading.Thread):
    """Orders of three lines, each order one transaction: a consistent snapshot never shows half an order."""

    def __init__(self, db: MariaDB, name: str) -> None:
        super().__init__(daemon=True)
        self.db, self.name, self.stop, self.count = db, name, threading.Event(), 0

    def run(self) -> None:
        from plugins.mysql.connection import connect

        conn = connect(self.db.endpoint, database=self.name)
        cur = conn.cursor()
        while not self.stop.is_set():
            cur.execute("INSERT INTO orders (customer_id) VALUES (1)")
            oid = cur.lastrowid
            for amount in (1, 2, 3):
                cur.execute("INSERT INTO order_lines (order_id, amount) VALUES (%s, %s)", (oid, amount))
            conn.commit()
            self.count += 1
        conn.close()


@pytest.fixture
def env(tmp_path: Path, mariadb: MariaDB):  # type: ignore[no-untyped-def]
    vault_dir = tmp_path / "vault"
    Vault.create(LocalBackend(str(vault_dir)), PASS, kdf_cost=12)
    catalog = Catalog(f"sqlite:///{tmp_path / 'catalog.db'}")

    def policy(databases: list[str], **extra: object):  # type: ignore[no-untyped-def]
        p = tmp_path / "policy.yaml"
        src = {"name": "db", "plugin": "mysql", "host": "127.0.0.1", "port": mariadb.port, "user": "root",
               "databases": databases, "staging_dir": str(tmp_path / "staging"), **extra}
        p.write_text(yaml.safe_dump({"policy": "db", "client": "acme", "vault": str(vault_dir), "sources": [src]}))
        return load_policy(str(p))

    def run(pol):  # type: ignore[no-untyped-def]
        rep = run_policy(pol, Vault.open(LocalBackend(str(vault_dir)), PASS), catalog)
        return rep.sources[0]

    return mariadb, policy, run, vault_dir


def restore(cli: Cli, db: MariaDB, vault_dir: Path, snap: str, new: str, *extra: str, check: bool = True):  # type: ignore[no-untyped-def]
    return cli("restore", "mysql", snap[:12], "--vault", str(vault_dir), "--as-database", new, "--port",
               str(db.port), *extra, "--json", check=check)


def test_consistent_snapshot_under_writes_restores_exactly(env, cli: Cli) -> None:  # type: ignore[no-untyped-def]
    db, policy, run, vault_dir = env
    load_schema(db, "shop")
    for _ in range(20):  # some volume, so the dump takes a while with the writer running
        db.sql("INSERT INTO orders (customer_id, total) SELECT 2, 6 FROM customers c1, customers c2, customers c3, "
               "customers c4, customers c5, customers c6, customers c7, customers c8", "shop")
    writer = Writer(db, "shop")
    writer.start()
    while writer.count < 20:
        time.sleep(0.01)
    res = run(policy(["shop"]))
    writer.stop.set()
    writer.join()
    assert res.status == "ok", res
    assert res.consistency.startswith("transaction-consistent")
    assert writer.count > 20

    out = json.loads(restore(cli, db, vault_dir, res.snapshot, "shop_r").stdout)
    assert out["verified"].startswith("row counts and CHECKSUM TABLE equal")
    assert out["tables"] == 4
    assert "utf8mb4_unicode_ci" in db.sql("SHOW CREATE DATABASE shop_r")
    # one point in time: every order the writer made has its three lines and its trigger-made total
    assert db.sql("SELECT COUNT(*) FROM orders o WHERE o.customer_id = 1 AND (o.total <> 6 OR "
                  "(SELECT COUNT(*) FROM order_lines l WHERE l.order_id = o.id) <> 3)", "shop_r").strip() == "0"
    assert int(db.sql("SELECT COUNT(*) FROM orders WHERE customer_id = 1", "shop_r")) >= 20
    assert db.sql("SELECT COUNT(*) FROM order_lines l LEFT JOIN orders o ON o.id = l.order_id WHERE o.id IS NULL",
                  "shop_r").strip() == "0"
    # every type came back byte for byte; views, routine, trigger and event exist under the new name
    cols = "id, name, note, HEX(photo), balance, ratio, flags+0, created, ts, kind, tags, doc, shout"
    assert db.sql(f"SELECT {cols} FROM customers", "shop_r") == db.sql(f"SELECT {cols} FROM customers", "shop")
    assert int(db.sql("SELECT COUNT(*) FROM big_orders", "shop_r")) > 0
    assert db.sql("SHOW PROCEDURE STATUS WHERE Db = 'shop_r'").count("add_order") == 1
    assert "lines_ai" in db.sql("SHOW TRIGGERS FROM shop_r")
    assert "nightly" in db.sql("SHOW EVENTS FROM shop_r")

    p = restore(cli, db, vault_dir, res.snapshot, "shop_r", check=False)
    assert p.returncode == 2 and "already exists" in p.stderr


def test_point_in_time_restore_from_archived_binlogs(env, cli: Cli) -> None:  # type: ignore[no-untyped-def]
    db, policy, run, vault_dir = env
    load_schema(db, "pitr")
    db.sql("CREATE USER 'reporting'@'10.%' IDENTIFIED BY 'r3port'; GRANT SELECT ON pitr.* TO 'reporting'@'10.%'")
    pol = policy(["pitr"], users_and_grants=True)
    first = run(pol)
    assert first.status == "ok" and not first.warnings, first
    db.sql("INSERT INTO events_log (label) VALUES ('A')", "pitr")
    file, pos = db.sql("SHOW MASTER STATUS").split()[:2]
    time.sleep(1.2)
    between = datetime.now().strftime("%Y-%m-%d %H:%M:%S")
    time.sleep(1.2)
    db.sql("INSERT INTO events_log (label) VALUES ('B')", "pitr")
    second = run(pol)
    assert second.status == "ok", second

    def labels(name: str) -> list[str]:
        return db.sql("SELECT label FROM events_log ORDER BY id", name).split()

    out = json.loads(restore(cli, db, vault_dir, second.snapshot, "pitr_t", "--to-time", between).stdout)
    assert out["replayed"] and labels("pitr_t") == ["A"]
    out = json.loads(restore(cli, db, vault_dir, second.snapshot, "pitr_p", "--to-position", f"{file}:{pos}").stdout)
    assert labels("pitr_p") == ["A"]
    db.sql("DROP USER 'reporting'@'10.%'")  # lost since the backup: --with-users brings it back with its grants
    restore(cli, db, vault_dir, second.snapshot, "pitr_full", "--with-users")
    assert labels("pitr_full") == ["A", "B"]
    assert "GRANT SELECT ON `pitr`.* TO `reporting`@`10.%`" in db.sql("SHOW GRANTS FOR 'reporting'@'10.%'")
    # outside the snapshot's logs: refused with the range, nothing created
    p = restore(cli, db, vault_dir, second.snapshot, "pitr_x", "--to-time", "2001-01-01 00:00:00", check=False)
    assert p.returncode == 2 and "before this snapshot's logs begin" in p.stderr
    p = restore(cli, db, vault_dir, first.snapshot, "pitr_y", "--to-time", between, check=False)
    assert p.returncode == 2 and "no archived binary logs" in p.stderr
    assert "pitr_x" not in db.sql("SHOW DATABASES") and "pitr_y" not in db.sql("SHOW DATABASES")


def test_failures_are_clear_and_leave_the_vault_usable(env, tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    db, policy, run, vault_dir = env
    load_schema(db, "acct")
    res = run(policy(["acct"], port=1))
    assert res.status == "failed" and "is not reachable" in res.errors[0], res
    db.sql("CREATE USER IF NOT EXISTS 'bk'@'127.0.0.1' IDENTIFIED BY 'right'")
    monkeypatch.setenv("BK_PASSWORD", "wrong")
    res = run(policy(["acct"], user="bk", password_env="BK_PASSWORD"))
    assert res.status == "failed" and "refused user 'bk'" in res.errors[0], res
    res = run(policy(["nosuchdb"]))
    assert res.status == "failed" and "database 'nosuchdb' does not exist" in res.errors[0], res

    # enough to dump, but not to read the binary logs: the first snapshot works, the next names the privilege
    db.sql("GRANT SELECT, SHOW VIEW, TRIGGER, EVENT, BINLOG MONITOR ON *.* TO 'bk'@'127.0.0.1'")
    monkeypatch.setenv("BK_PASSWORD", "right")
    weak = policy(["acct"], user="bk", password_env="BK_PASSWORD")
    assert run(weak).status == "ok"
    db.sql("INSERT INTO events_log (label) VALUES ('C')", "acct")
    res = run(weak)
    assert res.status == "failed" and "REPLICATION SLAVE" in res.errors[0], res
    assert run(policy(["acct"])).status == "ok"  # the vault took no harm; the next run succeeds

    # the staging area for the binary logs is full: a clear error, nothing published, the next run succeeds
    import subprocess

    small = tmp_path / "small-staging"
    small.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=128k", "tmpfs", str(small)], check=True)
    try:
        full_pol = policy(["acct"], staging_dir=str(small))
        db.sql("INSERT INTO events_log (label) SELECT LEFT(MD5(RAND()), 20) FROM customers c1, customers c2, "
               "customers c3, customers c4, customers c5, customers c6, customers c7, customers c8, customers c9, "
               "customers c10, customers c11, customers c12, customers c13, customers c14", "acct")
        before = len(Vault.open(LocalBackend(str(vault_dir)), PASS).snapshot_ids())
        res = run(full_pol)
        assert res.status == "failed" and "is full" in res.errors[0], res
        assert len(Vault.open(LocalBackend(str(vault_dir)), PASS).snapshot_ids()) == before
    finally:
        subprocess.run(["umount", str(small)], check=True)
    assert run(policy(["acct"])).status == "ok"

    nolog = start_mariadb(binlog=False)
    try:
        load_schema(nolog, "plain")
        p = tmp_path / "nolog.yaml"
        p.write_text(yaml.safe_dump({"policy": "db", "client": "acme", "vault": str(vault_dir), "sources": [
            {"name": "plain", "plugin": "mysql", "host": "127.0.0.1", "port": nolog.port, "user": "root"}]}))
        res = run(load_policy(str(p)))
        assert res.status == "ok" and any("binary logging is disabled" in w for w in res.warnings), res
    finally:
        nolog.stop()
    assert os.listdir(tmp_path / "staging") == [] if (tmp_path / "staging").exists() else True


def test_physical_full_and_incrementals_restore_the_data_at_backup_time(env, cli: Cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    db, policy, run, vault_dir = env
    load_schema(db, "phys")
    pol = policy([], mode="physical", full_every=3)  # datadir asked from the server

    def state() -> str:
        return db.sql("SELECT 'c', COUNT(*), SUM(total) FROM orders UNION ALL SELECT 'l', COUNT(*), SUM(amount) "
                      "FROM order_lines UNION ALL SELECT 'e', COUNT(*), GROUP_CONCAT(label ORDER BY id) FROM "
                      "events_log", "phys")

    full = run(pol)
    assert full.status == "ok" and full.mode == "full", full
    db.sql("CALL add_order(1); SET @o = (SELECT MAX(id) FROM orders); INSERT INTO order_lines (order_id, amount) "
           "VALUES (@o, 7); "
           "INSERT INTO events_log (label) VALUES ('after-full')", "phys")
    inc1 = run(pol)
    db.sql("INSERT INTO events_log (label) VALUES ('after-inc1')", "phys")
    at_inc2 = state()
    inc2 = run(pol)
    db.sql("INSERT INTO events_log (label) VALUES ('after-inc2')", "phys")  # not in the snapshot
    assert inc1.status == inc2.status == "ok"
    vault = Vault.open(LocalBackend(str(vault_dir)), PASS)
    snap = vault.resolve(inc2.snapshot)
    assert snap.meta["chain"] == ["physical/00-full.xbstream", "physical/01-incremental.xbstream",
                                  "physical/02-incremental.xbstream"]
    assert inc2.bytes_new < full.bytes_new / 4  # an incremental adds only the changed pages to the vault

    target = tmp_path / "restored-datadir"
    out = json.loads(cli("restore", "mysql", inc2.snapshot[:12], "--vault", str(vault_dir), "--target-datadir",
                         str(target), "--json", timeout=300).stdout)
    assert out["verified"].startswith("a server started") and out["rows"]["phys.events_log"] == 2
    # the restored directory, served by its own server, holds exactly the data at the time of inc2
    from tests.mariadb import serve_datadir

    with serve_datadir(str(target)) as restored:
        assert restored.sql("SELECT 'c', COUNT(*), SUM(total) FROM orders UNION ALL SELECT 'l', COUNT(*), "
                            "SUM(amount) FROM order_lines UNION ALL SELECT 'e', COUNT(*), GROUP_CONCAT(label ORDER "
                            "BY id) FROM events_log", "phys") == at_inc2
    # the chain restarts with a full after full_every snapshots
    restart = run(pol)
    assert Vault.open(LocalBackend(str(vault_dir)), PASS).resolve(restart.snapshot).meta["chain"] == [
        "physical/00-full.xbstream"]
    p = cli("restore", "mysql", inc2.snapshot[:12], "--vault", str(vault_dir), "--target-datadir", str(target),
            check=False)
    assert p.returncode == 1 and "is not empty" in p.stderr
