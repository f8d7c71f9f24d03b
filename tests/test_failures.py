"""Every failure the vault must survive: damage is named precisely, nothing partial becomes visible, and the
next run succeeds."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from orchestrator.backup.image import backup_image_file
from orchestrator.errors import IntegrityError, VaultBusy
from orchestrator.restore.image import restore_image
from orchestrator.vault.crypto import ID_LEN
from orchestrator.vault.locks import VaultLock
from orchestrator.vault.pack import pack_path
from orchestrator.vault.repository import Vault
from orchestrator.vault.snapshot import load_image_map
from orchestrator.vault.verify import verify_vault
from tests.conftest import Cli, assert_one_line_error, mixed_bytes, reopen

pytestmark = pytest.mark.vault
BS = 4096


def _flip(path: str, offset: int) -> None:
    os.chmod(path, 0o644)
    with open(path, "r+b") as f:
        f.seek(offset)
        b = f.read(1)
        f.seek(offset)
        f.write(bytes([b[0] ^ 0x40]))


def test_flipped_byte_is_located_by_verify_and_refused_by_restore(vault: Vault, write_image, tmp_path) -> None:
    img = write_image(os.urandom(40 * BS))
    sid = backup_image_file(vault, str(img), "disk")["id"]
    item = vault.read_snapshot(sid).items[0]
    bmap = load_image_map(item, vault.read_chunk)
    block = 17
    cid = bytes(bmap[block * ID_LEN : (block + 1) * ID_LEN])
    loc = vault.load_index().get(cid)
    _flip(f"{vault.backend.location}/{pack_path(loc.pack)}", loc.offset + 100)

    rep = verify_vault(reopen(vault))
    assert not rep.ok
    hits = [d for d in rep.damage if d.snapshot == sid]
    assert [(d.item, d.offset, d.length) for d in hits] == [("image", block * BS, BS)]
    assert "authentication failed" in hits[0].reason

    out = tmp_path / "out.img"
    with pytest.raises(IntegrityError, match=f"offset {block * BS}"):
        restore_image(reopen(vault), item, str(out))
    assert not out.exists()  # no half-restored file left behind


def test_truncated_manifest_is_reported_and_others_survive(cli: Cli, cli_vault: Path, tmp_path) -> None:
    img = tmp_path / "d.img"
    img.write_bytes(mixed_bytes(20 * BS, 1))
    a = json.loads(cli("backup", "image", str(img), "--vault", str(cli_vault), "--name", "a", "--json").stdout)
    b = json.loads(cli("backup", "image", str(img), "--vault", str(cli_vault), "--name", "b", "--json").stdout)
    manifest = cli_vault / "snapshots" / a["id"]
    os.chmod(manifest, 0o644)
    os.truncate(manifest, manifest.stat().st_size // 2)

    p = cli("snapshots", "--vault", str(cli_vault), "--json", check=False)
    assert p.returncode == 3
    listed = json.loads(p.stdout)
    assert {x["id"] for x in listed if not x.get("damaged")} == {b["id"]}
    assert [x["id"] for x in listed if x.get("damaged")] == [a["id"]]

    v = cli("verify", "--vault", str(cli_vault), "--json", check=False)
    assert v.returncode == 3
    assert any(d["snapshot"] == a["id"] for d in json.loads(v.stdout)["damage"])

    r = cli("restore", "image", a["id"][:10], "--vault", str(cli_vault), "--output", str(tmp_path / "o"), check=False)
    assert_one_line_error(r, 3, "manifest", "damaged")
    cli("restore", "image", b["id"][:10], "--vault", str(cli_vault), "--output", str(tmp_path / "o"))
    assert (tmp_path / "o").read_bytes() == img.read_bytes()


def test_missing_pack_names_every_affected_range(vault: Vault, write_image) -> None:
    img = write_image(os.urandom(64 * BS))
    sid = backup_image_file(vault, str(img), "disk")["id"]
    packs = sorted(vault.pack_names())
    data_packs = {loc.pack for loc in vault.load_index().chunks.values() if loc.kind == 0}
    victim = next(p for p in packs if p in data_packs)
    os.unlink(f"{vault.backend.location}/{pack_path(victim)}")
    rep = verify_vault(reopen(vault))
    assert not rep.ok and rep.snapshots_damaged == 1
    assert all(d.snapshot == sid and "missing" in d.reason for d in rep.damage)
    assert sum(d.length for d in rep.damage) % BS == 0 and rep.damage[0].offset % BS == 0


def test_kill_9_mid_backup_leaves_no_snapshot_and_next_run_reuses_chunks(cli: Cli, tmp_path) -> None:
    vault = tmp_path / "v"
    cli("vault", "init", str(vault), "--kdf-cost", "12", "--block-size", "4096", "--pack-size", "64KiB")
    img = tmp_path / "big.img"
    img.write_bytes(os.urandom(12 * 2**20))
    p = cli.popen("backup", "image", str(img), "--vault", str(vault), "--name", "big", "--read-limit", "3MiB/s")
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        packs = list((vault / "data").rglob("*")) if (vault / "data").exists() else []
        if sum(1 for x in packs if x.is_file() and not x.name.startswith(".tmp")) >= 20:
            break
        time.sleep(0.05)
    else:
        p.kill()
        pytest.fail("backup wrote no packs within 30 s")
    p.send_signal(signal.SIGKILL)
    p.wait()

    assert json.loads(cli("snapshots", "--vault", str(vault), "--json").stdout) == []
    ver = json.loads(cli("verify", "--vault", str(vault), "--json").stdout)
    assert ver["ok"] and ver["orphan_packs"] >= 20

    res = json.loads(cli("backup", "image", str(img), "--vault", str(vault), "--name", "big", "--json").stdout)
    assert res["chunks_reused"] >= 20 * 15  # what the killed run stored is adopted, not sent again
    assert res["bytes_stored"] < img.stat().st_size
    cli("restore", "image", res["id"], "--vault", str(vault), "--output", str(tmp_path / "r.img"))
    assert (tmp_path / "r.img").read_bytes() == img.read_bytes()
    assert json.loads(cli("verify", "--vault", str(vault), "--json").stdout)["ok"]


@pytest.mark.root
def test_disk_full_fails_cleanly_and_next_run_succeeds(cli: Cli, tmp_path) -> None:
    assert os.geteuid() == 0, "this test mounts a small tmpfs and must run as root (CI does)"
    mnt = tmp_path / "small"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=6m", "tmpfs", str(mnt)], check=True)
    try:
        vault = mnt / "vault"
        cli("vault", "init", str(vault), "--kdf-cost", "12", "--pack-size", "256KiB")
        img = tmp_path / "d.img"
        img.write_bytes(os.urandom(10 * 2**20))
        p = cli("backup", "image", str(img), "--vault", str(vault), "--name", "d", check=False)
        assert_one_line_error(p, 8, "full")
        assert json.loads(cli("snapshots", "--vault", str(vault), "--json").stdout) == []
        assert json.loads(cli("verify", "--vault", str(vault), "--json").stdout)["ok"]
        assert not [f for f in mnt.rglob(".tmp-*")]  # no half-written object left behind

        subprocess.run(["mount", "-o", "remount,size=64m", str(mnt)], check=True)
        res = json.loads(cli("backup", "image", str(img), "--vault", str(vault), "--name", "d", "--json").stdout)
        assert res["chunks_reused"] > 0  # packs stored before the disk filled are reused
        cli("restore", "image", res["id"], "--vault", str(vault), "--output", str(tmp_path / "r.img"))
        assert (tmp_path / "r.img").read_bytes() == img.read_bytes()
        assert json.loads(cli("verify", "--vault", str(vault), "--json").stdout)["ok"]
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_prune_during_backup_defers_gc_and_loses_nothing(cli: Cli, tmp_path) -> None:
    vault = tmp_path / "v"
    cli("vault", "init", str(vault), "--kdf-cost", "12", "--block-size", "4096", "--pack-size", "64KiB")
    img = tmp_path / "d.img"
    old = os.urandom(2 * 2**20)
    img.write_bytes(old)
    cli("backup", "image", str(img), "--vault", str(vault), "--name", "d")
    img.write_bytes(os.urandom(2 * 2**20))
    cli("backup", "image", str(img), "--vault", str(vault), "--name", "d")
    new = os.urandom(6 * 2**20)
    img.write_bytes(new)
    p = cli.popen("backup", "image", str(img), "--vault", str(vault), "--name", "d", "--read-limit", "2MiB/s",
                  "--json")
    deadline = time.monotonic() + 20
    while not list((vault / "locks").glob("*")) if (vault / "locks").exists() else True:
        assert time.monotonic() < deadline, "backup never took its lock"
        time.sleep(0.05)
    pr = json.loads(cli("prune", "--vault", str(vault), "--keep-last", "1", "--json").stdout)
    assert len(pr["removed"]) == 1 and not pr["gc"]["ran"] and "backup of d" in pr["gc"]["deferred_reason"]
    out, err = p.communicate(timeout=60)
    assert p.returncode == 0, err
    sid = json.loads(out)["id"]
    assert json.loads(cli("verify", "--vault", str(vault), "--json").stdout)["ok"]

    pr = json.loads(cli("prune", "--vault", str(vault), "--keep-last", "1", "--json").stdout)
    assert pr["gc"]["ran"] and pr["gc"]["bytes_freed"] > 3 * 2**20
    assert json.loads(cli("verify", "--vault", str(vault), "--json").stdout)["ok"]
    cli("restore", "image", sid, "--vault", str(vault), "--output", str(tmp_path / "r.img"))
    assert (tmp_path / "r.img").read_bytes() == new


def test_locks_exclude_gc_from_backups_and_ignore_dead_holders(vault: Vault) -> None:
    ex = VaultLock(vault.backend, "exclusive", "gc").acquire()
    with pytest.raises(VaultBusy, match="gc"):
        VaultLock(vault.backend, "shared", "backup").acquire(wait=0)
    ex.release()
    sh = VaultLock(vault.backend, "shared", "backup").acquire()
    with pytest.raises(VaultBusy, match="backup"):
        VaultLock(vault.backend, "exclusive", "gc").acquire(wait=0)
    sh2 = VaultLock(vault.backend, "shared", "backup 2").acquire()  # backups run side by side
    sh.release()
    sh2.release()
    # a lock left by a process that died (kill -9) does not block anyone
    dead = subprocess.Popen(["true"])
    dead.wait()
    vault.backend.put("locks/dead", json.dumps({"kind": "exclusive", "host": os.uname().nodename, "pid": dead.pid,
                                                 "expires": time.time() + 999}).encode())
    VaultLock(vault.backend, "shared", "backup").acquire(wait=0).release()
