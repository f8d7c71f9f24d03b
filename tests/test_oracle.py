"""The oracle plugin: RMAN level 0/1 chains with archived logs over real SSH to a host whose `rman` is a strict
stand-in, discovery through a strict fake of python-oracledb, and point-in-time restores to a new instance on
another host."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
import yaml

from orchestrator.backup.runner import run_policy
from orchestrator.catalog.db import Catalog
from orchestrator.policy.model import load_policy
from orchestrator.vault.backend.local import LocalBackend
from orchestrator.vault.repository import Vault
from tests.conftest import PASS, Cli
from tests.oracle_env import HOME, STAGE, OracleHosts, fake_connect

pytestmark = pytest.mark.oracle


@pytest.fixture
def ora(oracle_hosts: OracleHosts, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    """A fresh database ERP on db1 (a new DBID per test), a vault, a catalog and a policy maker."""
    import random

    h = oracle_hosts
    sid = f"ERP{random.randrange(10**6)}"
    h.model(h.db1, sid, "create", "ERP", str(random.randrange(10**9, 4 * 10**9)))
    monkeypatch.setattr("plugins.oracle.discovery.connect", fake_connect(h, h.db1, sid))
    monkeypatch.setenv("ORA_PW", "secret")
    vault_dir = tmp_path / "vault"
    Vault.create(LocalBackend(str(vault_dir)), PASS, kdf_cost=12)
    catalog = Catalog(f"sqlite:///{tmp_path / 'catalog.db'}")

    def policy(**extra: object):  # type: ignore[no-untyped-def]
        p = tmp_path / "policy.yaml"
        src = {"name": "ora", "plugin": "oracle", "dsn": "db1.acme.local:1521/ERP", "user": "c##dobaas",
               "password_env": "ORA_PW", "ssh": h.ssh_fields(h.db1), "oracle_home": HOME, "oracle_sid": sid,
               "staging_dir": STAGE, "level0_every": 7, **extra}
        p.write_text(yaml.safe_dump({"policy": "ora", "client": "acme", "vault": str(vault_dir), "sources": [src]}))
        return load_policy(str(p))

    def run(pol):  # type: ignore[no-untyped-def]
        return run_policy(pol, Vault.open(LocalBackend(str(vault_dir)), PASS), catalog).sources[0]

    return h, sid, vault_dir, policy, run


def snapshot(vault_dir: Path, sid: str):  # type: ignore[no-untyped-def]
    return Vault.open(LocalBackend(str(vault_dir)), PASS).read_snapshot(sid)


def staging(h: OracleHosts) -> list[str]:
    return h.db1.ssh(f"ls -A {STAGE}").stdout.split()


def test_level0_level1_chain_and_restore_to_an_scn_between_two_runs(ora, cli: Cli) -> None:
    h, sid, vault_dir, policy, run = ora
    pol = policy()
    h.model(h.db1, sid, "insert", "5")
    first = run(pol)
    assert first.status == "ok", first.errors
    h.model(h.db1, sid, "insert", "3")
    second = run(pol)
    mid_scn = h.state(h.db1, sid)["scn"]
    h.model(h.db1, sid, "insert", "4")
    third = run(pol)
    assert second.status == third.status == "ok", (second.errors, third.errors)
    assert staging(h) == []  # every run's pieces left the staging directory once published
    snaps = [snapshot(vault_dir, r.snapshot) for r in (first, second, third)]
    assert [s.meta["level"] for s in snaps] == [0, 1, 1]
    last = snaps[-1]
    kinds = [c["kind"] for c in last.meta["chain"]]
    assert kinds.count("datafile") == 3 and "archivelog" in kinds
    names = {i["name"] for i in last.items}
    assert {c["item"] for c in last.meta["chain"]} | {last.meta["controlfile"]} == names  # the whole chain
    lo, hi = last.meta["scn_range"]["from"], last.meta["scn_range"]["to"]
    assert lo < mid_scn < hi
    # restore to the SCN between the second and the third run, as a new instance on the other host
    env = Cli({})
    args = ["restore", "oracle", last.id, "--vault", str(vault_dir), "--target-host", f"127.0.0.1:{h.db2.port}",
            "--oracle-sid", "ERPCOPY", "--to-scn", str(mid_scn), "--json"]
    res = json.loads(env(*args).stdout)
    assert res["restored_as"] == "ERPCOPY" and "complete" in res["verified"], res
    want = [r for r in h.state(h.db1, sid)["rows"] if r["scn"] <= mid_scn]
    assert len(want) == 8 and h.state(h.db2, "ERPCOPY")["rows"] == want
    assert h.db2.ssh(f"ls -A {STAGE}").stdout.split() == []
    # to a time: the database host's clock, between the second and the third run's inserts
    import time as _time

    _time.sleep(1.1)
    when = h.state(h.db1, sid)["rows"][-1]["time"]  # the last row before a pause
    _time.sleep(1.1)
    h.model(h.db1, sid, "insert", "2")
    fourth = snapshot(vault_dir, run(pol).snapshot)
    res = json.loads(env("restore", "oracle", fourth.id, "--vault", str(vault_dir), "--target-host",
                         f"127.0.0.1:{h.db2.port}", "--oracle-sid", "ERPTIME", "--to-time", when, "--json").stdout)
    assert res["until"] == when
    assert h.state(h.db2, "ERPTIME")["rows"] == [r for r in h.state(h.db1, sid)["rows"] if r["time"] <= when]
    assert len(h.state(h.db2, "ERPTIME")["rows"]) == 12
    # the same SID again, the source host, and an SCN outside the snapshot: refused before anything is copied
    p = env(*args, check=False)
    assert p.returncode == 2 and "already exists" in p.stderr
    p = env(*[a if a != f"127.0.0.1:{h.db2.port}" else f"127.0.0.1:{h.db1.port}" for a in args], check=False)
    assert p.returncode == 2 and "--in-place" in p.stderr
    p = env(*args[:-3], "--oracle-sid", "ERPX", "--to-scn", str(lo - 1), check=False)
    assert p.returncode == 2 and f"SCN {lo} to {hi}" in p.stderr
    # reversibility: the pieces as RMAN wrote them, and the RMAN commands that restore them
    out = vault_dir.parent / "export"
    env("export", last.id, "--vault", str(vault_dir), "--output", str(out))
    assert len(list(out.rglob("df_*"))) == 3 and len(list(out.rglob("c-*"))) == 1
    assert f"RECOVER DATABASE UNTIL SCN {hi};" in next(out.rglob("restore.rman")).read_text()


def test_a_lost_archived_log_means_a_new_level0_and_times_in_the_gap_are_refused(ora, cli: Cli) -> None:
    h, sid, vault_dir, policy, run = ora
    pol = policy()
    h.model(h.db1, sid, "insert", "2")
    assert run(pol).status == "ok"
    h.model(h.db1, sid, "insert", "2")
    h.model(h.db1, sid, "switch")
    gone = h.state(h.db1, sid)["archived"][-1]
    h.model(h.db1, sid, "lose-log", str(gone["seq"]))
    res = run(pol)
    assert res.status == "ok", res.errors
    snap = snapshot(vault_dir, res.snapshot)
    assert snap.meta["level"] == 0 and any(f"sequence(s) {gone['seq']}" in w and "gap" in w for w in res.warnings)
    assert all(lg["seq"] != gone["seq"] for lg in snap.meta["logs"])
    p = cli("restore", "oracle", snap.id, "--vault", str(vault_dir), "--target-host", f"127.0.0.1:{h.db2.port}",
            "--oracle-sid", "GAP", "--to-scn", str(gone["first"]), check=False)
    assert p.returncode == 2 and "outside what this snapshot covers" in p.stderr


def test_bct_off_warns_and_noarchivelog_is_refused(ora) -> None:
    h, sid, _vault_dir, policy, run = ora
    h.model(h.db1, sid, "set", "bct", '"DISABLED"')
    res = run(policy())
    assert res.status == "ok" and any("block change tracking is DISABLED" in w and "ENABLE BLOCK CHANGE TRACKING"
                                      in w for w in res.warnings), res.warnings
    h.model(h.db1, sid, "set", "log_mode", '"NOARCHIVELOG"')
    res = run(policy())
    assert res.status == "failed" and "NOARCHIVELOG" in " ".join(res.errors) and "ARCHIVELOG mode" in " ".join(
        res.errors)


def test_staging_full_reports_oracle_errors_verbatim_and_publishes_nothing(ora) -> None:
    h, sid, vault_dir, policy, run = ora
    h.model(h.db1, sid, "insert", "20")
    h.model(h.db1, sid, "set", "staging_quota", "6000")
    res = run(policy())
    assert res.status == "failed" and res.snapshot is None
    text = " ".join(res.errors)
    assert "ORA-19502: write error on file" in text and "ORA-27072: File I/O error" in text
    assert staging(h) == []
    assert Vault.open(LocalBackend(str(vault_dir)), PASS).list_snapshots()[0] == []
    h.model(h.db1, sid, "set", "staging_quota", "null")
    assert run(policy()).status == "ok"  # the next run succeeds


def test_archived_logs_deleted_only_once_published_and_host_key_mismatch(ora, tmp_path: Path) -> None:
    h, sid, _vault_dir, policy, run = ora
    h.model(h.db1, sid, "insert", "3")
    res = run(policy(delete_archivelogs=True))
    assert res.status == "ok"
    state = h.state(h.db1, sid)
    kept = [a for a in state["archived"] if os.path.basename(a["name"])]
    assert kept and all(a.get("deleted") for a in kept)  # every log the snapshot holds is gone from the host
    # a host key that does not match known_hosts: refused, nothing done
    wrong = tmp_path / "known_hosts"
    other = tmp_path / "k"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)], check=True)
    wrong.write_text(f"[127.0.0.1]:{h.db1.port} " + " ".join(Path(f"{other}.pub").read_text().split()[:2]) + "\n")
    ssh = {**h.ssh_fields(h.db1), "known_hosts": str(wrong)}
    res = run(policy(ssh=ssh))
    assert res.status == "failed" and "does not match" in " ".join(res.errors)


def test_the_stand_in_refuses_what_it_was_not_taught_and_a_missing_log(oracle_hosts: OracleHosts) -> None:
    """The stand-in's own strictness: a misspelt command is RMAN-00558; recovery that needs an archived log
    nobody catalogued is RMAN-06054 naming its sequence."""
    from plugins.oracle import rman as script

    h = oracle_hosts

    def rman(sid: str, text: str) -> subprocess.CompletedProcess:
        return h.db1.ssh(f"runuser -u oracle -- env ORACLE_HOME={HOME} ORACLE_SID={sid} {HOME}/bin/rman target / "
                         f"<<'EOF'\n{text}EOF", check=False)

    p = rman("X", "BACKUP DATABSE;\n")
    assert p.returncode == 1 and "RMAN-00558: error encountered while parsing input commands" in p.stdout
    h.model(h.db1, "STRICT", "create", "STRICT", "42")
    h.model(h.db1, "STRICT", "insert", "3")
    d = f"{STAGE}/strict"
    h.db1.ssh(f"runuser -u oracle -- mkdir -p {d}")
    assert rman("STRICT", script.backup(0, d)).returncode == 0
    h.model(h.db1, "STRICT", "insert", "3")
    ckpt = h.state(h.db1, "STRICT")["scn"]
    h.db1.ssh(f"rm -f {d}/al_*")  # every archived-log piece lost
    h.db1.ssh(f"runuser -u oracle -- sh -c \"echo \\\"*.db_name='STRICT'\\\" > {d}/init.ora\"")
    cf = h.db1.ssh(f"ls {d} | grep '^c-'").stdout.split()[0]
    p = rman("STRICT2", script.restore(f"{d}/init.ora", f"{d}/{cf}", d, ckpt))
    assert p.returncode == 1 and "RMAN-06054: media recovery requesting unknown archived log for thread 1 with " \
        "sequence" in p.stdout, p.stdout


def test_discovery_through_the_strict_fake(ora) -> None:  # type: ignore[no-untyped-def]
    from plugins.oracle import discovery

    conn = discovery.connect("db1.acme.local:1521/ERP", "c##dobaas", "secret")
    info = discovery.describe(conn)
    assert info.name == "ERP" and info.log_mode == "ARCHIVELOG" and info.bct == "ENABLED" and not info.cdb
    with pytest.raises(Exception, match="ORA-00942"):
        discovery.query(conn, "SELECT * FROM dba_users")
    from orchestrator.errors import DobaasError

    with pytest.raises(DobaasError, match="ORA-01017"):
        discovery.connect("db1.acme.local:1521/ERP", "c##dobaas", "wrong")
