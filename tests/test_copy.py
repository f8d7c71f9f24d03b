"""`dobaas copy`: snapshots of every item type (file tree with odd names, image, stream) copied to a vault with
other keys, restored byte-equal from the copy; only changes sent the next time; idempotent; a killed copy
resumed; damage in the source reported, never copied as if it were good."""

from __future__ import annotations

import io
import json
import os
import signal
import time
from pathlib import Path

import pytest

from orchestrator.backup.session import BackupSession
from orchestrator.cbt.chunker import Chunker
from orchestrator.cbt.stream import capture_stream
from orchestrator.restore.stream import restore_stream
from orchestrator.vault.backend.local import LocalBackend
from orchestrator.vault.repository import Vault
from tests.conftest import PASS, Cli, mixed_bytes

pytestmark = pytest.mark.vault
MiB = 2**20
OTHER_PASS = "another site, another passphrase"


def make_tree(root: Path) -> None:
    (root / "sub").mkdir(parents=True)
    (root / "a.txt").write_text("alpha")
    (root / "sub" / "big.bin").write_bytes(os.urandom(2 * MiB))
    (root / "sub" / "same1.bin").write_bytes(b"x" * 300_000)
    (root / "sub" / "same2.bin").write_bytes(b"x" * 300_000)
    os.symlink("a.txt", root / "link")
    (root / os.fsdecode(b"caf\xe9-latin1.txt")).write_bytes(b"not utf-8 name")  # a name that is not UTF-8


def two_vaults(cli: Cli, tmp: Path) -> tuple[Path, Path, Cli]:
    src, dst = tmp / "src-vault", tmp / "dst-vault"
    cli("vault", "init", str(src), "--kdf-cost", "12", "--pack-size", "1MiB")
    cli("vault", "init", str(dst), "--kdf-cost", "12", "--pack-size", "1MiB", passphrase=OTHER_PASS)
    return src, dst, Cli({"DOBAAS_TO_PASSPHRASE": OTHER_PASS})


def test_copy_every_item_type_restores_byte_equal_and_sends_only_changes(cli: Cli, tmp_path: Path,
                                                                         write_image) -> None:  # type: ignore[no-untyped-def]
    src_vault, dst_vault, c = two_vaults(cli, tmp_path)
    data = tmp_path / "data"
    make_tree(data)
    pol = tmp_path / "p.yaml"
    pol.write_text(f"policy: p\nclient: acme\nvault: {src_vault}\nsources:\n"
                   f"  - {{name: docs, plugin: files, paths: ['{data}']}}\n")
    cli("run", str(pol))
    img = write_image(mixed_bytes(4 * MiB, 5) + bytes(MiB) + os.urandom(MiB))
    cli("backup", "image", str(img), "--vault", str(src_vault), "--name", "acme/disk")
    v = Vault.open(LocalBackend(str(src_vault)), PASS)
    dump = mixed_bytes(500_000, 3)
    with BackupSession(v, "acme/db", lock_wait=0) as s:
        s.commit([capture_stream(s.writer, io.BytesIO(dump), "dump.sql", Chunker(1024, 4096, 16384)).item])

    rep = json.loads(c("copy", "--from", str(src_vault), "--to", str(dst_vault), "--json").stdout)
    assert len(rep["copied"]) == 3 and rep["already"] == [] and rep["chunks_sent"] > 0, rep
    # the copy verifies with its own keys and restores byte-equal
    assert json.loads(cli("verify", "--vault", str(dst_vault), "--json", passphrase=OTHER_PASS).stdout)["ok"]
    snaps = {s["name"]: s for s in json.loads(cli("snapshots", "--vault", str(dst_vault), "--json",
                                                  passphrase=OTHER_PASS).stdout)}
    assert set(snaps) == {"acme/docs", "acme/disk", "acme/db"}
    src_snaps = {s["name"]: s for s in json.loads(cli("snapshots", "--vault", str(src_vault), "--json").stdout)}
    assert snaps["acme/docs"]["time"] == src_snaps["acme/docs"]["time"]  # taken when the source was
    cli("restore", "files", snaps["acme/docs"]["id"], str(data), "--vault", str(dst_vault), "--target",
        str(tmp_path / "out"), passphrase=OTHER_PASS)
    for f in ("a.txt", "sub/big.bin", "sub/same2.bin", os.fsdecode(b"caf\xe9-latin1.txt")):
        assert (tmp_path / "out" / f).read_bytes() == (data / f).read_bytes(), f
    assert os.readlink(tmp_path / "out" / "link") == "a.txt"
    cli("restore", "image", snaps["acme/disk"]["id"], "--vault", str(dst_vault), "--output",
        str(tmp_path / "disk.out"), passphrase=OTHER_PASS)
    assert (tmp_path / "disk.out").read_bytes() == img.read_bytes()
    d = Vault.open(LocalBackend(str(dst_vault)), OTHER_PASS)
    out = io.BytesIO()
    restore_stream(d, d.read_snapshot(snaps["acme/db"]["id"]).items[0], out)
    assert out.getvalue() == dump
    # nothing readable in the destination under the source's keys: it has its own
    assert cli("snapshots", "--vault", str(dst_vault), check=False).returncode == 4

    # again: nothing to do
    rep = json.loads(c("copy", "--from", str(src_vault), "--to", str(dst_vault), "--json").stdout)
    assert rep["copied"] == [] and len(rep["already"]) == 3 and rep["chunks_read"] == 0, rep
    # a nightly change: only it is read and sent
    (data / "a.txt").write_text("changed")
    (data / "sub" / "new.bin").write_bytes(os.urandom(MiB))
    cli("run", str(pol))
    rep = json.loads(c("copy", "--from", str(src_vault), "--to", str(dst_vault), "--source", "acme/docs",
                       "--json").stdout)
    assert len(rep["copied"]) == 1 and rep["bytes_sent"] < 1.5 * MiB, rep
    assert rep["chunks_read"] < 40, rep  # the big file and the rest were known from the id map
    new = rep["copied"][0]["copy"]
    cli("restore", "files", new, str(data), "--vault", str(dst_vault), "--target", str(tmp_path / "out2"),
        passphrase=OTHER_PASS)
    assert (tmp_path / "out2" / "sub" / "new.bin").read_bytes() == (data / "sub" / "new.bin").read_bytes()
    assert (tmp_path / "out2" / "a.txt").read_text() == "changed"
    assert json.loads(cli("verify", "--vault", str(dst_vault), "--json", passphrase=OTHER_PASS).stdout)["ok"]


def test_killed_copy_publishes_nothing_and_the_next_one_completes(cli: Cli, tmp_path: Path) -> None:
    src_vault, dst_vault, c = two_vaults(cli, tmp_path)
    data = tmp_path / "data"
    data.mkdir()
    for i in range(60):
        (data / f"f{i}.bin").write_bytes(os.urandom(MiB))
    pol = tmp_path / "p.yaml"
    pol.write_text(f"policy: p\nclient: acme\nvault: {src_vault}\nsources:\n"
                   f"  - {{name: docs, plugin: files, paths: ['{data}']}}\n")
    cli("run", str(pol))
    proc = c.popen("copy", "--from", str(src_vault), "--to", str(dst_vault), "--json")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and sum(len(f) for _d, _s, f in os.walk(dst_vault / "data")) < 5:
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert json.loads(cli("snapshots", "--vault", str(dst_vault), "--json", passphrase=OTHER_PASS).stdout) == []
    rep = json.loads(c("copy", "--from", str(src_vault), "--to", str(dst_vault), "--json").stdout)
    assert len(rep["copied"]) == 1 and rep["bytes_sent"] < 60 * MiB, rep  # what the killed copy sent was reused
    assert json.loads(cli("verify", "--vault", str(dst_vault), "--json", passphrase=OTHER_PASS).stdout)["ok"]


def test_damage_in_the_source_fails_the_copy_clearly(cli: Cli, tmp_path: Path) -> None:
    src_vault, dst_vault, c = two_vaults(cli, tmp_path)
    data = tmp_path / "data"
    data.mkdir()
    (data / "f.bin").write_bytes(os.urandom(3 * MiB))
    pol = tmp_path / "p.yaml"
    pol.write_text(f"policy: p\nclient: acme\nvault: {src_vault}\nsources:\n"
                   f"  - {{name: docs, plugin: files, paths: ['{data}']}}\n")
    cli("run", str(pol))
    packs = [os.path.join(d, f) for d, _s, fs in os.walk(src_vault / "data") for f in fs]
    biggest = max(packs, key=os.path.getsize)
    os.chmod(biggest, 0o644)
    with open(biggest, "r+b") as f:
        f.seek(os.path.getsize(biggest) // 2)
        b = f.read(1)
        f.seek(-1, 1)
        f.write(bytes([b[0] ^ 0xFF]))
    p = c("copy", "--from", str(src_vault), "--to", str(dst_vault), check=False)
    assert p.returncode == 3 and "Traceback" not in p.stderr, p.stderr
    assert json.loads(cli("snapshots", "--vault", str(dst_vault), "--json", passphrase=OTHER_PASS).stdout) == []
    p = Cli({})("copy", "--from", str(src_vault), "--to", str(dst_vault), check=False)
    assert p.returncode == 2 and "DOBAAS_TO_PASSPHRASE" in p.stderr


def test_policy_copy_to_keeps_a_second_vault_up_to_date(cli: Cli, tmp_path: Path) -> None:
    src_vault, dst_vault, _c = two_vaults(cli, tmp_path)
    data = tmp_path / "data"
    make_tree(data)
    secret = tmp_path / "second.pass"
    secret.write_text(OTHER_PASS)
    pol = tmp_path / "p.yaml"
    pol.write_text(f"policy: p\nclient: acme\nvault: {src_vault}\n"
                   f"copy_to: {{vault: '{dst_vault}', passphrase_file: '{secret}'}}\n"
                   f"sources:\n  - {{name: docs, plugin: files, paths: ['{data}']}}\n")
    rep = json.loads(cli("run", str(pol), "--json").stdout)
    assert rep["copy"]["status"] == "ok" and len(rep["copy"]["copied"]) == 1, rep
    # the second vault is unreachable for one run: the run says so (exit 1), its snapshot is safe
    os.rename(dst_vault, tmp_path / "away")
    (data / "a.txt").write_text("day 2")
    p = cli("run", str(pol), check=False)
    assert p.returncode == 1 and "FAILED  copy to" in p.stdout, p.stdout + p.stderr
    os.rename(tmp_path / "away", dst_vault)
    (data / "a.txt").write_text("day 3")
    rep = json.loads(cli("run", str(pol), "--json").stdout)
    assert rep["exit_code"] == 0 and len(rep["copy"]["copied"]) == 2, rep  # day 3, and day 2 left behind
    copies = json.loads(cli("snapshots", "--vault", str(dst_vault), "--json", passphrase=OTHER_PASS).stdout)
    originals = json.loads(cli("snapshots", "--vault", str(src_vault), "--json").stdout)
    assert sorted(s["time"] for s in copies) == sorted(s["time"] for s in originals)
    p = cli("policy", "check", str(pol), passphrase=None, check=False)
    assert p.returncode == 0, p.stderr
