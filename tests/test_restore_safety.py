"""Restores that meet damage or a hostile destination, and backups that meet a FIFO: everything intact is
restored, every damaged file is named, nothing is written through a swapped directory, no temporary file is
left, and nothing hangs."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest

from orchestrator.restore.local_sink import LocalSink
from orchestrator.restore.tree import restore_tree
from orchestrator.vault.tree import TreeWriter
from tests.conftest import Cli, assert_one_line_error

pytestmark = pytest.mark.files


def _temporaries(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.name.startswith(".dobaas-restore-")]


def test_damaged_file_costs_only_itself(tmp_path: Path, cli: Cli, cli_vault: Path) -> None:
    src = tmp_path / "src"
    (src / "a" / "b").mkdir(parents=True)
    files = {f"a/b/f{i:02d}.bin": os.urandom(30_000 + i) for i in range(12)}
    files["top.txt"] = b"top level\n" * 100
    for rel, data in files.items():
        (src / rel).write_bytes(data)
    pol = tmp_path / "p.yaml"
    pol.write_text(f"policy: p\nclient: c\nvault: {cli_vault}\nsources:\n"
                   f"  - {{name: docs, plugin: files, paths: ['{src}']}}\n")
    sid = json.loads(cli("run", str(pol), "--json").stdout)["sources"][0]["snapshot"]
    # damage the chunk of one file in the middle of the tree: find it through verify's own report
    victim = "a/b/f05.bin"
    (src / victim).write_bytes(b"")  # the source changes afterwards; the snapshot must still be what we restore
    from orchestrator.vault.backend.local import LocalBackend
    from orchestrator.vault.repository import Vault
    from orchestrator.vault.tree import iter_tree
    from tests.conftest import PASS

    v = Vault.open(LocalBackend(str(cli_vault)), PASS)
    item = v.read_snapshot(sid).items[0]
    entry = next(e for e in iter_tree(item, lambda c: v.read_chunk(c)) if e["p"] == victim)
    loc = v.load_index().get(bytes.fromhex(entry["c"][0][0]))
    pack = cli_vault / "data" / loc.pack[:2] / loc.pack
    os.chmod(pack, 0o644)
    raw = bytearray(pack.read_bytes())
    raw[loc.offset + 50] ^= 0x10
    pack.write_bytes(bytes(raw))

    out = tmp_path / "out"
    p = cli("restore", "files", sid[:12], str(src), "--vault", str(cli_vault), "--target", str(out), check=False)
    assert p.returncode == 3, (p.returncode, p.stderr)
    assert victim in p.stderr and "damaged in the vault" in p.stderr
    for rel, data in files.items():
        if rel != victim:
            assert (out / rel).read_bytes() == data, rel
    assert not (out / victim).exists()
    assert _temporaries(out) == []
    rj = json.loads(cli("restore", "files", sid[:12], str(src), "--vault", str(cli_vault), "--target",
                        str(tmp_path / "out2"), "--json", check=False).stdout)
    assert rj["status"] == "damaged" and rj["damaged"] == [f"{src}/{victim}"] and rj["files"] == len(files) - 1


def _item(entries: list[dict], store: dict[bytes, bytes]) -> dict:
    def put(data: bytes) -> bytes:
        cid = os.urandom(32)
        store[cid] = data
        return cid

    w = TreeWriter(put)
    for e in entries:
        w.add(e)
    return {"name": "t", "type": "tree", "map": w.finish()}


def test_a_directory_swapped_for_a_symlink_mid_restore_is_not_followed(tmp_path: Path) -> None:
    store: dict[bytes, bytes] = {}
    data = {os.urandom(32): b"first", os.urandom(32): b"second"}
    store.update(data)
    (c1, _), (c2, _) = data.items()
    item = _item([{"p": "", "t": "d", "m": 0o755}, {"p": "sub", "t": "d", "m": 0o755},
                  {"p": "sub/one.txt", "t": "f", "m": 0o644, "c": [[c1.hex(), 5]]},
                  {"p": "sub/two.txt", "t": "f", "m": 0o600, "c": [[c2.hex(), 6]]}], store)
    target, outside = tmp_path / "target", tmp_path / "outside"
    outside.mkdir()

    def read_chunk(cid: bytes, what: str) -> bytes:
        if cid == c2:  # an attacker swaps the directory being restored into for a link elsewhere
            os.rename(target / "sub", tmp_path / "moved")
            os.symlink(outside, target / "sub")
        return store[cid]

    sink = LocalSink(str(target))
    try:
        rep = restore_tree(read_chunk, item, lambda c: store[c], sink, None, "always")
    finally:
        sink.close()
    assert list(outside.iterdir()) == []  # nothing written, chmod-ed or renamed through the link
    assert (tmp_path / "moved" / "two.txt").read_bytes() == b"second"  # it went where the directory went
    assert oct((tmp_path / "moved" / "two.txt").stat().st_mode & 0o777) == "0o600"
    assert rep.errors == ["sub: metadata not restored: no longer a directory (a symbolic link?); not following it"]
    assert _temporaries(tmp_path) == []


def test_metadata_goes_on_descriptors_never_through_links(tmp_path: Path) -> None:
    store: dict[bytes, bytes] = {}
    cid = os.urandom(32)
    store[cid] = b"secret"
    victim = tmp_path / "victim.txt"
    victim.write_text("not to be touched")
    os.chmod(victim, 0o600)
    item = _item([{"p": "", "t": "d", "m": 0o755}, {"p": "link", "t": "l", "l": str(victim), "mt": 10**18},
                  {"p": "x.txt", "t": "f", "m": 0o640, "c": [[cid.hex(), 6]], "mt": 1_600_000_000 * 10**9},
                  {"p": "fifo", "t": "p", "m": 0o620, "mt": 1_500_000_000 * 10**9}], store)
    sink = LocalSink(str(tmp_path / "t"))
    signal.alarm(20)  # a FIFO opened for metadata would block: fail rather than hang
    try:
        rep = restore_tree(lambda c, w: store[c], item, lambda c: store[c], sink, None, "always")
    finally:
        signal.alarm(0)
        sink.close()
    assert not rep.errors, rep.errors
    assert oct(victim.stat().st_mode & 0o777) == "0o600" and victim.read_text() == "not to be touched"
    assert os.readlink(tmp_path / "t" / "link") == str(victim)
    st = (tmp_path / "t" / "fifo").lstat()
    assert oct(st.st_mode & 0o777) == "0o620" and st.st_mtime_ns == 1_500_000_000 * 10**9
    assert (tmp_path / "t" / "x.txt").stat().st_mtime_ns == 1_600_000_000 * 10**9


def test_a_file_replaced_by_a_fifo_before_its_read_does_not_hang_a_backup(tmp_path: Path) -> None:
    from orchestrator.plugin.localtree.walk import LocalTree

    (tmp_path / "x").write_text("regular at walk time")
    tree = LocalTree(str(tmp_path), [], False)
    entries = [e for e in tree.walk() if isinstance(e, dict) and e["p"] == "x"]
    assert entries
    os.unlink(tmp_path / "x")
    os.mkfifo(tmp_path / "x")
    signal.alarm(20)
    try:
        with pytest.raises(OSError, match="no longer a regular file"):
            tree.open(entries[0])
    finally:
        signal.alarm(0)


def test_backup_image_of_a_fifo_is_refused_at_once(tmp_path: Path, cli: Cli, cli_vault: Path) -> None:
    os.mkfifo(tmp_path / "pipe")
    p = cli("backup", "image", str(tmp_path / "pipe"), "--vault", str(cli_vault), "--name", "x", check=False,
            timeout=30)
    assert_one_line_error(p, 6, "not a regular file or block device")
