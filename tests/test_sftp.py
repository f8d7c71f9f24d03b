"""The remote vault over a real OpenSSH server: host-key checks, tenant isolation, append-only clients, a
connection cut mid-backup, residency, quotas and throttling."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import paramiko
import pytest
import yaml

from orchestrator.errors import DobaasError
from orchestrator.vault.backend import AlreadyExists
from orchestrator.vault.backend.local import LocalBackend
from orchestrator.vault.backend.sftp import SftpBackend, SftpOptions
from orchestrator.vault.repository import Vault
from tests.conftest import PASS, Cli, assert_one_line_error
from tests.sshd import Sshd

pytestmark = pytest.mark.sftp
MiB = 2**20


def provider_init(sshd: Sshd, tenant: str, *extra: str, cli: Cli) -> None:
    """What the provider does on the vault host: create the repository, then hand it to the tenant's user."""
    repo = sshd.tenants[tenant].repo
    if not os.path.exists(os.path.join(repo, "config")):
        cli("vault", "init", repo, "--kdf-cost", "12", "--pack-size", "1MiB", *extra)
        sshd.give_to(tenant)


def client_cli(sshd: Sshd, tenant: str) -> Cli:
    return Cli(sshd.env(tenant))


def policy(tmp: Path, sshd: Sshd, tenant: str, paths: list[str], **extra: object) -> Path:
    p = tmp / f"{tenant}.yaml"
    p.write_text(yaml.safe_dump({"policy": "remote", "client": tenant, "vault": sshd.url(tenant),
                                 "remote": {"known_hosts": sshd.known_hosts,
                                            "identity_file": sshd.tenants[tenant].key},
                                 "sources": [{"name": "docs", "plugin": "files", "paths": paths}], **extra}))
    return p


def sftp_session(sshd: Sshd, tenant: str, as_key: str | None = None) -> paramiko.SFTPClient:
    c = paramiko.SSHClient()
    c.load_host_keys(sshd.known_hosts)
    c.set_missing_host_key_policy(paramiko.RejectPolicy())
    c.connect("127.0.0.1", sshd.port, username=sshd.tenants[tenant].user,
              key_filename=as_key or sshd.tenants[tenant].key, look_for_keys=False, allow_agent=False)
    return c.open_sftp()


def test_round_trip_host_keys_isolation_and_append_only(sshd: Sshd, cli: Cli, tmp_path: Path) -> None:
    provider_init(sshd, "a", cli=cli)
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "a.txt").write_text("hello")
    (src / "sub" / "b.bin").write_bytes(os.urandom(3 * MiB))
    remote = client_cli(sshd, "a")
    res = json.loads(remote("run", str(policy(tmp_path, sshd, "a", [str(src)])), "--json").stdout)["sources"][0]
    assert res["status"] == "ok", res
    snaps = json.loads(remote("snapshots", "--vault", sshd.url("a"), "--json").stdout)
    assert len(snaps) == 1
    remote("restore", "files", snaps[0]["id"][:12], str(src), "--vault", sshd.url("a"), "--target",
           str(tmp_path / "out"))
    assert (tmp_path / "out" / "sub" / "b.bin").read_bytes() == (src / "sub" / "b.bin").read_bytes()
    assert json.loads(remote("verify", "--vault", sshd.url("a"), "--json").stdout)["ok"]

    # host keys: an unknown server and a changed key are refused, never learned
    empty = tmp_path / "empty_known_hosts"
    empty.write_text("")
    p = Cli({**sshd.env("a"), "DOBAAS_SFTP_KNOWN_HOSTS": str(empty)})("snapshots", "--vault", sshd.url("a"),
                                                                      check=False)
    assert p.returncode == 1 and "not in" in p.stderr and "refusing an unknown server" in p.stderr
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "other")], check=True)
    other = (tmp_path / "other.pub").read_text().split()
    changed = tmp_path / "changed_known_hosts"
    changed.write_text(f"[127.0.0.1]:{sshd.port} {other[0]} {other[1]}\n")
    p = Cli({**sshd.env("a"), "DOBAAS_SFTP_KNOWN_HOSTS": str(changed)})("snapshots", "--vault", sshd.url("a"),
                                                                        check=False)
    assert p.returncode == 1 and "has CHANGED" in p.stderr

    # tenant isolation: a's key does not open b's account; a sees nothing outside its chroot
    with pytest.raises(paramiko.AuthenticationException):
        sftp_session(sshd, "b", as_key=sshd.tenants["a"].key)
    s = sftp_session(sshd, "a")
    assert sorted(s.listdir("/")) == ["repo"]
    with pytest.raises(FileNotFoundError):
        s.listdir(f"/../{sshd.tenants['b'].user}")

    # append-only: the client can neither delete, rename nor overwrite history
    snap_file = f"/repo/snapshots/{snaps[0]['id']}"
    with pytest.raises(PermissionError):
        s.remove(snap_file)
    with pytest.raises(PermissionError):
        s.rename(snap_file, "/repo/snapshots/x")
    with pytest.raises(PermissionError):
        s.open(snap_file, "wb")
    with pytest.raises(PermissionError):
        s.chmod(snap_file, 0o644)
    s.close()
    # prune from the client cannot remove anything either: it says why (retention is the provider's) and
    # history survives
    (src / "a.txt").write_text("hello again")
    pol = policy(tmp_path, sshd, "a", [str(src)], retention={"keep_last": 1}, schedule="0 3 * * *")
    remote("run", str(pol))
    p = remote("prune", "--vault", sshd.url("a"), "--keep-last", "1", check=False)
    assert_one_line_error(p, 1, "refuses deletions (append-only", "dobaas vault maintain")
    assert len(json.loads(remote("snapshots", "--vault", sshd.url("a"), "--json").stdout)) == 2
    assert json.loads(remote("verify", "--vault", sshd.url("a"), "--json").stdout)["ok"]
    # the daemon applies a policy's retention after each good run: on an append-only vault it leaves it to the
    # provider and the run stays a success
    pols = tmp_path / "policies"
    pols.mkdir()
    (pols / "a.yaml").write_text(pol.read_text())
    d = remote.popen("--log-json", "-v", "daemon", "--policies", str(pols), "--run-now")
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and len(json.loads(
                remote("snapshots", "--vault", sshd.url("a"), "--json").stdout)) < 3:
            time.sleep(0.3)
        time.sleep(1.5)  # the retention step follows the snapshot
    finally:
        d.send_signal(signal.SIGTERM)
        _out, err = d.communicate(timeout=60)
    assert d.returncode == 0, err[-2000:]
    assert "retention: not applied here" in err and "Traceback" not in err, err[-3000:]
    assert len(json.loads(remote("snapshots", "--vault", sshd.url("a"), "--json").stdout)) == 3


def test_cut_connection_mid_backup_resumes_without_resending(sshd: Sshd, cli: Cli, tmp_path: Path) -> None:
    provider_init(sshd, "a", cli=cli)
    img = tmp_path / "disk.img"
    img.write_bytes(os.urandom(48 * MiB))
    remote = client_cli(sshd, "a")
    before = len(json.loads(remote("snapshots", "--vault", sshd.url("a"), "--json").stdout))
    env = {**os.environ, **sshd.env("a"), "DOBAAS_PASSPHRASE": PASS, "DOBAAS_BANDWIDTH_LIMIT": "16MiB/s"}
    from tests.conftest import DOBAAS

    proc = subprocess.Popen([DOBAAS, "backup", "image", str(img), "--vault", sshd.url("a"), "--name", "cut", "--json"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    packs = Path(sshd.tenants["a"].repo, "data")
    deadline = time.monotonic() + 60
    while sum(1 for p in packs.rglob("*") if p.is_file()) < 8 and time.monotonic() < deadline:
        time.sleep(0.05)
    pids = sshd.session_pids("a")
    assert pids, "no SFTP session to cut"
    # no snapshot is visible while the backup runs
    assert not list(Path(sshd.tenants["a"].repo, "snapshots").iterdir()) or before
    for pid in pids:
        os.kill(pid, signal.SIGKILL)  # the connection drops mid-upload
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    res = json.loads(out)
    assert "reconnecting" in err or "partial upload" in err or res["bytes_stored"] > 0
    # every chunk was sent once, plus at most the pack being written when the connection dropped
    assert res["bytes_stored"] <= 48 * MiB + 3 * MiB, res
    remote("restore", "image", res["id"][:12], "--vault", sshd.url("a"), "--output", str(tmp_path / "back.img"))
    assert (tmp_path / "back.img").read_bytes() == img.read_bytes()
    assert json.loads(remote("verify", "--vault", sshd.url("a"), "--json").stdout)["ok"]


def test_throttling_and_residency(sshd: Sshd, cli: Cli, tmp_path: Path) -> None:
    provider_init(sshd, "b", "--location", "DE", cli=cli)
    os.makedirs(os.path.join(sshd.tenants["b"].repo, "bwtest"), exist_ok=True)
    sshd.give_to("b")
    b = SftpBackend(sshd.url("b"), SftpOptions(sshd.known_hosts, sshd.tenants["b"].key, None, 8 * MiB))
    try:
        data = os.urandom(8 * MiB)
        b.put("bwtest/warmup", data[: MiB])
        t0 = time.monotonic()
        for i in range(5):
            b.put(f"bwtest/{i}", data)
        rate = 40 * MiB / (time.monotonic() - t0)
    finally:
        b.close()
    assert 0.9 * 8 * MiB <= rate <= 1.1 * 8 * MiB, rate / MiB

    src = tmp_path / "src"
    src.mkdir()
    (src / "f.txt").write_text("data")
    remote = client_cli(sshd, "b")
    data_dir = Path(sshd.tenants["b"].repo, "data")
    p = remote("run", str(policy(tmp_path, sshd, "b", [str(src)])), "--json", check=False)
    assert p.returncode == 1 and "outside France" in p.stderr and "residency_consent" in p.stderr, p.stderr
    assert not [f for f in data_dir.rglob("*") if f.is_file()]  # refused before any byte left
    p = remote("run", str(policy(tmp_path, sshd, "b", [str(src)], residency_consent="ACME-2026-DPA-7")), "--json")
    snap = json.loads(remote("snapshots", "--vault", sshd.url("b"), "--json").stdout)[0]
    vault = Vault.open(LocalBackend(sshd.tenants["b"].repo), PASS)
    meta = vault.resolve(snap["id"]).meta
    assert meta["stored_in"] == "DE" and meta["residency_consent"] == "ACME-2026-DPA-7"


def test_quota_warns_at_90_and_refuses_at_100(sshd: Sshd, cli: Cli, tmp_path: Path) -> None:
    t = sshd.tenants["c"]
    import pwd

    uid = pwd.getpwnam(t.user).pw_uid
    # the subscribed volume, enforced by the vault host: the tenant's repository is a file system of that size,
    # with blocks reserved for root so that provider maintenance still works when the tenant has filled it
    image = Path(sshd.base, "c-volume.img")
    subprocess.run(["truncate", "-s", "40M", str(image)], check=True)
    subprocess.run(["mkfs.ext4", "-q", "-F", "-m", "10", "-O", "^has_journal", str(image)], check=True)
    subprocess.run(["mount", "-o", "loop", str(image), t.repo], check=True)
    os.chown(t.repo, uid, uid)
    provider_init(sshd, "c", cli=cli)
    st = os.statvfs(t.repo)
    room = st.f_bavail * st.f_frsize  # what the tenant may still store
    remote = client_cli(sshd, "c")
    src = tmp_path / "src"
    src.mkdir()
    (src / "one.bin").write_bytes(os.urandom(int(0.55 * room)))
    pol = policy(tmp_path, sshd, "c", [str(src)])
    res = json.loads(remote("run", str(pol), "--json").stdout)["sources"][0]
    assert res["status"] == "ok" and not any("subscribed" in w for w in res["warnings"]), res
    (src / "two.bin").write_bytes(os.urandom(int(0.38 * room)))
    res = json.loads(remote("run", str(pol), "--json").stdout)["sources"][0]
    assert res["status"] == "ok" and any("used" in w and "subscribed" in w for w in res["warnings"]), res["warnings"]
    (src / "three.bin").write_bytes(os.urandom(int(0.2 * room)))
    p = remote("run", str(pol), "--json", check=False)
    assert p.stdout, p.stderr
    res = json.loads(p.stdout)["sources"][0]
    assert p.returncode == 1 and res["status"] == "failed" and "full" in res["errors"][0], res
    snaps = json.loads(remote("snapshots", "--vault", sshd.url("c"), "--json").stdout)
    assert len(snaps) == 2  # nothing partial published
    ver = remote("verify", "--vault", sshd.url("c"), "--json", check=False)
    assert json.loads(ver.stdout)["ok"], ver.stdout[-3000:]

    # provider maintenance on the vault host: the client's retention, the leftovers the client cannot delete
    kept = tmp_path / "retention.yaml"
    kept.write_text(pol.read_text().replace("sources:", "retention: {keep_last: 1}\nsources:"))
    m = json.loads(cli("vault", "maintain", "--vault", t.repo, "--policy", str(kept), "--verify", "--json").stdout)
    assert len(m["prune"]["removed"]) == 1 and m["deferred"] is None, m
    assert m["incomplete_removed"] and m["locks_removed"] >= 1, m
    assert m["verify"]["ok"] and m["verify"]["incomplete_objects"] == [] and m["verify"]["snapshots"] == 1, m
    sshd.give_to("c")  # objects the provider rewrote (the consolidated index) stay readable, directories writable
    (src / "three.bin").unlink()
    res = json.loads(remote("run", str(pol), "--json").stdout)["sources"][0]
    assert res["status"] == "ok", res


@pytest.mark.parametrize("transport", ["openssh", "paramiko"])
def test_both_transports_check_keys_and_move_data(sshd: Sshd, cli: Cli, tmp_path: Path, transport: str) -> None:
    provider_init(sshd, "a", cli=cli)
    with pytest.raises(DobaasError, match="refused our key"):
        SftpBackend(sshd.url("a"), SftpOptions(sshd.known_hosts, sshd.tenants["b"].key, transport=transport))
    with pytest.raises(Exception, match="known_hosts"):
        SftpBackend(sshd.url("a"), SftpOptions(str(tmp_path / "missing"), sshd.tenants["a"].key,
                                               transport=transport))
    other = tmp_path / "other"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)], check=True)
    changed = tmp_path / "changed"
    changed.write_text(f"[127.0.0.1]:{sshd.port} " + " ".join((tmp_path / "other.pub").read_text().split()[:2]))
    with pytest.raises(DobaasError, match="has CHANGED"):
        SftpBackend(sshd.url("a"), SftpOptions(str(changed), sshd.tenants["a"].key, transport=transport))
    b = SftpBackend(sshd.url("a"), SftpOptions(sshd.known_hosts, sshd.tenants["a"].key, transport=transport))
    try:
        blob = os.urandom(3 * MiB + 17)
        b.put(f"locks/probe-{transport}", blob)  # junk in locks/ is ignored by lock readers
        assert b.get(f"locks/probe-{transport}") == blob
        assert b.get_range(f"locks/probe-{transport}", -17, 17) == blob[-17:]
        b.put(f"locks/probe-{transport}", blob)  # the same upload again (a retry after a lost reply): accepted
        with pytest.raises(AlreadyExists):
            b.put(f"locks/probe-{transport}", blob[:-1])
    finally:
        b.close()
