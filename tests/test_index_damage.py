"""A damaged index object must never cost a kept snapshot: readers fall back to the packs' own headers, garbage
collection refuses to delete while any referenced chunk is unaccounted for, and maintenance keeps what it cannot
prove is garbage."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from orchestrator.backup.image import backup_image_file
from orchestrator.errors import IntegrityError
from orchestrator.vault.maintain import maintain
from orchestrator.vault.prune import collect_garbage, prune
from orchestrator.vault.repository import Vault
from orchestrator.vault.verify import verify_vault
from tests.conftest import Cli, mixed_bytes, reopen

pytestmark = pytest.mark.vault
BS = 4096


def _flip_middle(path: Path) -> None:
    os.chmod(path, 0o644)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


def _two_backups(cli: Cli, vault: Path, tmp_path: Path) -> tuple[dict, dict, bytes]:
    img = tmp_path / "d.img"
    img.write_bytes(mixed_bytes(200 * BS, 7))
    first = json.loads(cli("backup", "image", str(img), "--vault", str(vault), "--name", "d", "--json").stdout)
    data = bytearray(img.read_bytes())
    data[10 * BS : 12 * BS] = os.urandom(2 * BS)
    img.write_bytes(bytes(data))
    ext = tmp_path / "ext.json"
    ext.write_text(json.dumps([[10 * BS, 2 * BS]]))
    second = json.loads(cli("backup", "image", str(img), "--vault", str(vault), "--name", "d",
                            "--changed-extents", str(ext), "--json").stdout)
    assert second["mode"] == "incremental"
    return first, second, bytes(data)


def _oldest_index_object(vault: Path) -> Path:
    objs = sorted((vault / "index").iterdir(), key=lambda p: p.stat().st_mtime_ns)
    assert len(objs) >= 2
    return objs[0]


def test_flipped_bit_in_an_index_object_then_prune_keeps_the_kept_snapshot(cli: Cli, cli_vault: Path,
                                                                          tmp_path: Path) -> None:
    _first, second, data = _two_backups(cli, cli_vault, tmp_path)
    _flip_middle(_oldest_index_object(cli_vault))

    # readers use the packs' own headers: the kept snapshot restores and verifies before any prune
    out = tmp_path / "before.img"
    cli("restore", "image", second["id"], "--vault", str(cli_vault), "--output", str(out))
    assert out.read_bytes() == data

    p = cli("prune", "--vault", str(cli_vault), "--keep-last", "1", check=False)
    assert p.returncode in (0, 3), p.stderr
    v = cli("verify", "--vault", str(cli_vault), "--json", check=False)
    rep = json.loads(v.stdout)
    assert not [d for d in rep["damage"] if d["snapshot"] == second["id"]], rep["damage"]
    out2 = tmp_path / "after.img"
    cli("restore", "image", second["id"], "--vault", str(cli_vault), "--output", str(out2))
    assert out2.read_bytes() == data
    # the index is whole again: a second prune and a verify are clean
    cli("prune", "--vault", str(cli_vault), "--keep-last", "1")
    assert cli("verify", "--vault", str(cli_vault)).returncode == 0


def test_gc_refuses_when_a_referenced_chunk_is_unaccounted_for(vault: Vault, write_image) -> None:
    img = write_image(mixed_bytes(60 * BS, 3))
    backup_image_file(vault, str(img), "d")
    v = reopen(vault)
    # the index object AND the pack header of the data are both damaged: no reader can locate those chunks
    idx = next(iter((Path(v.backend.location) / "index").iterdir()))
    _flip_middle(idx)
    packs = sorted((Path(v.backend.location) / "data").rglob("*"))
    packs = [p for p in packs if p.is_file()]
    for p in packs:
        os.chmod(p, 0o644)
        raw = bytearray(p.read_bytes())
        raw[-10] ^= 0x01  # inside the sealed header
        p.write_bytes(bytes(raw))
    before = {p: p.stat().st_size for p in packs}
    with pytest.raises(IntegrityError, match="nothing was deleted"):
        collect_garbage(reopen(vault))
    assert {p: p.stat().st_size for p in packs if p.exists()} == before  # every pack still there
    assert idx.exists()


def test_maintenance_does_not_delete_a_damaged_index_object_it_cannot_replace(vault: Vault, write_image) -> None:
    img = write_image(mixed_bytes(60 * BS, 4))
    backup_image_file(vault, str(img), "d")
    idx = next(iter((Path(vault.backend.location) / "index").iterdir()))
    _flip_middle(idx)
    for p in (Path(vault.backend.location) / "data").rglob("*"):
        if p.is_file():
            os.chmod(p, 0o644)
            raw = bytearray(p.read_bytes())
            raw[-10] ^= 0x01
            p.write_bytes(bytes(raw))
    rep = maintain(reopen(vault))
    assert idx.exists()
    assert rep.incomplete_removed == []
    assert rep.refused


def test_maintenance_rebuilds_the_index_from_pack_headers_before_dropping_a_damaged_object(
        vault: Vault, write_image, tmp_path: Path) -> None:
    img = write_image(mixed_bytes(60 * BS, 5))
    sid = backup_image_file(vault, str(img), "d")["id"]
    idx = next(iter((Path(vault.backend.location) / "index").iterdir()))
    _flip_middle(idx)
    rep = maintain(reopen(vault))
    assert not idx.exists() and rep.incomplete_removed == [f"index/{idx.name}"]
    v = reopen(vault)
    assert not v.load_index().damaged
    assert verify_vault(v).ok
    prune(v, keep_last=1)
    assert verify_vault(reopen(vault)).ok
    assert sid in reopen(vault).snapshot_ids()
