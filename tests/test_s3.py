"""Vaults on a real S3 server (SeaweedFS): backup, incremental, restore, verify and prune; Object Lock against a
compromised client key (locked versions survive, delete markers undone by the provider); a killed upload resumed;
another tenant's key refused."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest
import yaml

from orchestrator.vault.backend import AlreadyExists
from orchestrator.vault.backend.s3 import S3Backend, S3Options
from tests.conftest import Cli, assert_one_line_error
from tests.s3server import OTHER, PROVIDER, TENANT, S3Server

pytestmark = pytest.mark.s3
MiB = 2**20


def tree(root: Path, seed: int = 0) -> Path:
    (root / "sub").mkdir(parents=True, exist_ok=True)
    (root / "a.txt").write_text(f"hello {seed}")
    (root / "sub" / "big.bin").write_bytes(os.urandom(3 * MiB))
    for i in range(20):
        (root / "sub" / f"f{i}.txt").write_text(f"file {i} " * (i + 1))
    return root


def policy(tmp: Path, url: str, paths: list[str], **extra: object) -> Path:
    p = tmp / "s3.yaml"
    p.write_text(yaml.safe_dump({"policy": "s3", "client": "acme", "vault": url,
                                 "remote": {"endpoint": "DUMMY", "access_key_env": "ACME_S3_KEY",
                                            "secret_key_env": "ACME_S3_SECRET"},
                                 "sources": [{"name": "docs", "plugin": "files", "paths": paths}], **extra}))
    return p


def tenant_cli(s3: S3Server, key: tuple[str, str] = TENANT) -> Cli:
    """A client site: its own key pair only, passed as the policy names them (and as AWS_* for commands)."""
    return Cli({**s3.env(key), "ACME_S3_KEY": key[0], "ACME_S3_SECRET": key[1]})


def write_policy(tmp: Path, s3: S3Server, url: str, paths: list[str], **extra: object) -> Path:
    p = policy(tmp, url, paths, **extra)
    doc = yaml.safe_load(p.read_text())
    doc["remote"]["endpoint"] = s3.endpoint
    p.write_text(yaml.safe_dump(doc))
    return p


def wait_for_packs(server: S3Server, bucket: str, count: int, timeout: float = 60) -> None:
    """Until a backup in progress has stored ``count`` packs under repo/data/ (or ``timeout`` passed)."""
    s3 = server.client()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and \
            s3.list_objects_v2(Bucket=bucket, Prefix="repo/data/").get("KeyCount", 0) < count:
        time.sleep(0.05)


def snapshots(c: Cli, url: str) -> list[dict]:
    return json.loads(c("snapshots", "--vault", url, "--json").stdout)


def test_backup_incremental_restore_verify_prune_on_s3(s3server: S3Server, tmp_path: Path) -> None:
    provider = Cli(s3server.env(PROVIDER))
    s3server.client().create_bucket(Bucket="plain-vault")
    url = "s3://plain-vault/acme"
    provider("vault", "init", url, "--kdf-cost", "12", "--pack-size", "1MiB")
    src = tree(tmp_path / "src")
    pol = write_policy(tmp_path, s3server, url, [str(src)])
    client = tenant_cli(s3server, PROVIDER)  # no Object Lock here: the key may delete (its own prune)
    first = json.loads(client("run", str(pol), "--json").stdout)["sources"][0]
    assert first["status"] == "ok", first
    (src / "a.txt").write_text("changed")
    (src / "sub" / "new.bin").write_bytes(os.urandom(MiB))
    second = json.loads(client("run", str(pol), "--json").stdout)["sources"][0]
    assert second["status"] == "ok" and second["bytes_stored"] < 2 * MiB, second  # only the change went up
    snaps = snapshots(client, url)
    assert len(snaps) == 2
    client("restore", "files", snaps[-1]["id"][:12], str(src), "--vault", url, "--target", str(tmp_path / "out"))
    for f in ("a.txt", "sub/big.bin", "sub/new.bin", "sub/f7.txt"):
        assert (tmp_path / "out" / f).read_bytes() == (src / f).read_bytes(), f
    assert json.loads(client("verify", "--vault", url, "--json").stdout)["ok"]
    rep = json.loads(client("prune", "--vault", url, "--keep-last", "1", "--json").stdout)
    assert len(rep["removed"]) == 1 and rep["gc"]["ran"], rep
    assert len(snapshots(client, url)) == 1
    assert json.loads(client("verify", "--vault", url, "--json").stdout)["ok"]
    # the objects live under the prefix only, none at the bucket's root
    keys = [o["Key"] for o in s3server.client().list_objects_v2(Bucket="plain-vault").get("Contents", [])]
    assert keys and all(k.startswith("acme/") for k in keys)


def test_write_once_and_ranges_through_the_backend(s3server: S3Server) -> None:
    s3server.client().create_bucket(Bucket="backend-vault")
    b = S3Backend("s3://backend-vault/x", S3Options(s3server.endpoint, None, *PROVIDER, provider=True))
    b.put("data/00/abc", b"0123456789")
    with pytest.raises(AlreadyExists):
        b.put("data/00/abc", b"other")
    assert b.get("data/00/abc") == b"0123456789"
    assert b.get_range("data/00/abc", 2, 3) == b"234" and b.get_range("data/00/abc", -4, 4) == b"6789"
    big = os.urandom(70 * MiB)  # above the multipart threshold: parts, completed write-once
    b.put("data/01/big", big)
    with pytest.raises(AlreadyExists):
        b.put("data/01/big", big)
    assert b.get("data/01/big") == big
    assert sorted(b.list("data")) == [("data/00/abc", 10), ("data/01/big", len(big))]
    b.delete("data/01/big")
    assert not b.exists("data/01/big")


def test_object_lock_survives_a_compromised_client_key(s3server: S3Server, tmp_path: Path) -> None:
    url = "s3://acme-vault/repo"
    provider = Cli(s3server.env(PROVIDER))
    out = json.loads(provider("vault", "init", url, "--kdf-cost", "12", "--pack-size", "1MiB",
                              "--object-lock", "30", "--json").stdout)
    assert out["path"].startswith("s3://acme-vault/repo")
    conf = s3server.client().get_object_lock_configuration(Bucket="acme-vault")["ObjectLockConfiguration"]
    assert conf["Rule"]["DefaultRetention"] == {"Mode": "COMPLIANCE", "Days": 30}
    src = tree(tmp_path / "src")
    client = tenant_cli(s3server)
    pol = write_policy(tmp_path, s3server, url, [str(src)], retention={"keep_last": 1})
    for i in range(2):
        (src / "a.txt").write_text(f"run {i}")
        res = json.loads(client("run", str(pol), "--json").stdout)
        assert res["sources"][0]["status"] == "ok", res
    snaps = snapshots(client, url)
    assert len(snaps) == 2  # the run's retention is the provider's on this vault: nothing was deleted

    # a prune from the client is refused, clearly, and deletes nothing
    p = client("prune", "--vault", url, "--keep-last", "1", check=False)
    assert_one_line_error(p, 1, "refuses deletions", "dobaas vault maintain")
    assert len(snapshots(client, url)) == 2

    # the client's key cannot remove a locked version, even by its version id
    s3 = s3server.client(TENANT)
    versions = s3.list_object_versions(Bucket="acme-vault", Prefix="repo/snapshots/")["Versions"]
    with pytest.raises(Exception) as e:
        s3.delete_object(Bucket="acme-vault", Key=versions[0]["Key"], VersionId=versions[0]["VersionId"])
    assert "AccessDenied" in str(e.value)
    # another tenant's key reaches nothing of this vault
    other = tenant_cli(s3server, OTHER)
    p = other("snapshots", "--vault", url, check=False)
    assert p.returncode != 0 and "refused" in p.stderr, p.stderr

    # ransomware with the client's key "deletes" every object: delete markers over all of them
    keys = [o["Key"] for page in s3.get_paginator("list_objects_v2").paginate(Bucket="acme-vault", Prefix="repo/")
            for o in page.get("Contents", [])]
    assert len(keys) > 10
    for k in keys:
        s3.delete_object(Bucket="acme-vault", Key=k)
    p = client("snapshots", "--vault", url, check=False)
    assert_one_line_error(p, 5, "deleted by a client", "dobaas vault undelete")
    rep = json.loads(provider("vault", "undelete", "--vault", url, "--json").stdout)
    assert rep["objects_restored"] == len(keys)
    assert [s["id"] for s in snapshots(client, url)] == [s["id"] for s in snaps]
    client("restore", "files", snaps[-1]["id"][:12], str(src), "--vault", url, "--target", str(tmp_path / "out"))
    assert (tmp_path / "out" / "sub" / "big.bin").read_bytes() == (src / "sub" / "big.bin").read_bytes()
    assert (tmp_path / "out" / "a.txt").read_text() == "run 1"
    assert json.loads(client("verify", "--vault", url, "--json").stdout)["ok"]

    # provider maintenance applies the retention; COMPLIANCE keeps what is locked, and says so
    rep = json.loads(provider("vault", "maintain", "--vault", url, "--policy", str(pol), "--json").stdout)
    assert rep["prune"]["held"] == [snaps[0]["id"]] and rep["prune"]["removed"] == [], rep["prune"]
    assert len(snapshots(client, url)) == 2
    assert json.loads(client("verify", "--vault", url, "--json").stdout)["ok"]


def test_governance_lock_lets_the_provider_apply_retention(s3server: S3Server, tmp_path: Path) -> None:
    url = "s3://other-vault/repo"
    provider = Cli(s3server.env(PROVIDER))
    provider("vault", "init", url, "--kdf-cost", "12", "--pack-size", "1MiB", "--object-lock", "30",
             "--object-lock-mode", "governance")
    src = tree(tmp_path / "src")
    client = Cli({**s3server.env(OTHER), "ACME_S3_KEY": OTHER[0], "ACME_S3_SECRET": OTHER[1]})
    pol = write_policy(tmp_path, s3server, url, [str(src)], retention={"keep_last": 1})
    for _ in range(3):
        (src / "sub" / "big.bin").write_bytes(os.urandom(2 * MiB))  # each run leaves data the next makes dead
        client("run", str(pol), "--json")
    snaps = snapshots(client, url)
    assert len(snaps) == 3
    rep = json.loads(provider("vault", "maintain", "--vault", url, "--policy", str(pol), "--verify",
                              "--json").stdout)
    assert len(rep["prune"]["removed"]) == 2 and rep["prune"]["gc"]["packs_deleted"] >= 1, rep
    assert rep["verify"]["ok"]
    assert [s["id"] for s in snapshots(client, url)] == [snaps[-1]["id"]]
    # the deleted versions are gone for good (not hidden behind markers)
    left = s3server.client().list_object_versions(Bucket="other-vault", Prefix="repo/snapshots/")
    assert len(left.get("Versions", [])) == 1 and not left.get("DeleteMarkers")


def test_killed_upload_resumes_and_the_vault_stays_consistent(s3server: S3Server, tmp_path: Path) -> None:
    s3server.client().create_bucket(Bucket="killed-vault")
    url = "s3://killed-vault/repo"
    Cli(s3server.env(PROVIDER))("vault", "init", url, "--kdf-cost", "12", "--pack-size", "1MiB")
    src = tmp_path / "src"
    src.mkdir()
    for i in range(40):
        (src / f"f{i}.bin").write_bytes(os.urandom(MiB))
    client = tenant_cli(s3server, PROVIDER)
    pol = write_policy(tmp_path, s3server, url, [str(src)])
    proc = client.popen("run", str(pol), "--json")
    wait_for_packs(s3server, "killed-vault", 5)  # kill -9 once some packs are up
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert snapshots(client, url) == []
    res = json.loads(client("run", str(pol), "--json").stdout)["sources"][0]
    assert res["status"] == "ok", res
    assert res["bytes_stored"] < 40 * MiB  # what the killed run stored was reused
    assert json.loads(client("verify", "--vault", url, "--json").stdout)["ok"]
    client("restore", "files", snapshots(client, url)[0]["id"][:12], str(src), "--vault", url, "--target",
           str(tmp_path / "out"))
    assert all((tmp_path / "out" / f"f{i}.bin").read_bytes() == (src / f"f{i}.bin").read_bytes() for i in range(40))


def test_clear_errors_for_a_wrong_endpoint_missing_keys_and_a_bad_url(s3server: S3Server, tmp_path: Path) -> None:
    c = Cli({**s3server.env(PROVIDER), "AWS_SECRET_ACCESS_KEY": "wrong"})
    p = c("snapshots", "--vault", "s3://plain-vault/acme", check=False)
    assert p.returncode != 0 and "Traceback" not in p.stderr and "s3://plain-vault/acme" in p.stderr, p.stderr
    env = {k: "" for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")}
    p = Cli({**env, "DOBAAS_S3_ENDPOINT": s3server.endpoint})("snapshots", "--vault", "s3://plain-vault/acme",
                                                              check=False)
    assert_one_line_error(p, 2, "no S3 credentials")
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"policy": "p", "client": "c", "vault": "s3://bucket:99/x",
                                   "sources": [{"name": "d", "plugin": "files", "paths": ["/tmp"]}]}))
    p = Cli({})("policy", "check", str(bad), check=False)
    assert p.returncode != 0 and "s3://BUCKET" in p.stdout + p.stderr, p.stdout + p.stderr


def test_server_dying_mid_run_fails_clearly_and_the_next_run_succeeds(tmp_path: Path) -> None:
    from tests.s3server import start_s3

    base = str(tmp_path / "s3")
    server = start_s3(base)
    try:
        server.client().create_bucket(Bucket="dying-vault")
        url = "s3://dying-vault/repo"
        Cli(server.env(PROVIDER))("vault", "init", url, "--kdf-cost", "12", "--pack-size", "1MiB")
        src = tmp_path / "src"
        src.mkdir()
        for i in range(30):
            (src / f"f{i}.bin").write_bytes(os.urandom(MiB))
        client = tenant_cli(server, PROVIDER)
        pol = write_policy(tmp_path, server, url, [str(src)])
        proc = client.popen("run", str(pol), "--json")
        wait_for_packs(server, "dying-vault", 3)
        os.killpg(server.proc.pid, signal.SIGKILL)  # the storage service dies mid-run
        server.proc.wait()
        _out, err = proc.communicate(timeout=600)
        assert proc.returncode != 0 and "Traceback" not in err, err[-3000:]
        server = start_s3(base)  # back, with what it had stored
        client = tenant_cli(server, PROVIDER)
        pol = write_policy(tmp_path, server, url, [str(src)])
        res = json.loads(client("run", str(pol), "--json").stdout)["sources"][0]
        assert res["status"] == "ok", res
        assert json.loads(client("verify", "--vault", url, "--json").stdout)["ok"]
    finally:
        server.stop()


def test_copy_between_a_local_vault_and_an_s3_vault_both_ways(s3server: S3Server, tmp_path: Path) -> None:
    s3server.client().create_bucket(Bucket="copy-vault")
    url = "s3://copy-vault/second-site"
    env = s3server.env(PROVIDER)
    Cli(env)("vault", "init", url, "--kdf-cost", "12", "--pack-size", "1MiB", passphrase="s3 site")
    local, back = tmp_path / "local", tmp_path / "back"
    Cli({})("vault", "init", str(local), "--kdf-cost", "12", "--pack-size", "1MiB")
    Cli({})("vault", "init", str(back), "--kdf-cost", "12", "--pack-size", "1MiB", passphrase="back home")
    src = tree(tmp_path / "src")
    pol = tmp_path / "p.yaml"
    pol.write_text(f"policy: p\nclient: acme\nvault: {local}\nsources:\n  - {{name: docs, plugin: files, "
                   f"paths: ['{src}']}}\n")
    Cli({})("run", str(pol))
    up = json.loads(Cli({**env, "DOBAAS_TO_PASSPHRASE": "s3 site"})(
        "copy", "--from", str(local), "--to", url, "--json").stdout)
    assert len(up["copied"]) == 1, up
    assert json.loads(Cli(env)("verify", "--vault", url, "--json", passphrase="s3 site").stdout)["ok"]
    down = json.loads(Cli({**env, "DOBAAS_TO_PASSPHRASE": "back home"})(
        "copy", "--from", url, "--to", str(back), "--json", passphrase="s3 site").stdout)
    assert len(down["copied"]) == 1, down
    sid = down["copied"][0]["copy"]
    Cli({})("restore", "files", sid, str(src), "--vault", str(back), "--target", str(tmp_path / "out"),
            passphrase="back home")
    for f in ("a.txt", "sub/big.bin", "sub/f19.txt"):
        assert (tmp_path / "out" / f).read_bytes() == (src / f).read_bytes(), f


def test_bit_rot_in_an_s3_object_is_found_and_the_next_backup_heals_it(s3server: S3Server, tmp_path: Path) -> None:
    s3 = s3server.client()
    s3.create_bucket(Bucket="rot-vault")
    url = "s3://rot-vault/repo"
    Cli(s3server.env(PROVIDER))("vault", "init", url, "--kdf-cost", "12", "--pack-size", "1MiB")
    src = tree(tmp_path / "src")
    client = tenant_cli(s3server, PROVIDER)
    pol = write_policy(tmp_path, s3server, url, [str(src)])
    client("run", str(pol))
    packs = [o for o in s3.list_objects_v2(Bucket="rot-vault", Prefix="repo/data/")["Contents"]]
    victim = max(packs, key=lambda o: o["Size"])["Key"]
    body = bytearray(s3.get_object(Bucket="rot-vault", Key=victim)["Body"].read())
    body[len(body) // 2] ^= 0x10  # the object store returns other bytes than were written
    s3.put_object(Bucket="rot-vault", Key=victim, Body=bytes(body))
    p = client("verify", "--vault", url, "--json", check=False)
    assert p.returncode == 3 and not json.loads(p.stdout)["ok"], p.stdout + p.stderr
    client("run", str(pol))  # the same data read again: stored afresh
    assert json.loads(client("verify", "--vault", url, "--json").stdout)["ok"]  # both snapshots use the good copy
    snaps = snapshots(client, url)
    client("restore", "files", snaps[-1]["id"][:12], str(src), "--vault", url, "--target", str(tmp_path / "out"))
    assert (tmp_path / "out" / "sub" / "big.bin").read_bytes() == (src / "sub" / "big.bin").read_bytes()
