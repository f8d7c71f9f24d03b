"""A damaged chunk must not stay damaged forever through deduplication: verify records it, the next backup that
meets the same data stores it again (unchanged files and unchanged blocks included), which repairs the older
snapshots too, and the next prune rewrites the pack that held the bad copy."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.conftest import Cli, mixed_bytes

pytestmark = pytest.mark.vault
BS = 4096


def _flip_data_byte(vault: Path, pack_bytes: int) -> Path:
    """Flip one byte in the data area (not the header at the end) of the pack of about ``pack_bytes``."""
    packs = [p for p in (vault / "data").rglob("*") if p.is_file()]
    pack = min(packs, key=lambda p: abs(p.stat().st_size - pack_bytes))
    os.chmod(pack, 0o644)
    data = bytearray(pack.read_bytes())
    data[len(data) // 3] ^= 0x01
    pack.write_bytes(bytes(data))
    return pack


def test_an_unchanged_file_with_a_damaged_chunk_is_read_again_and_old_snapshots_heal(
        cli: Cli, cli_vault: Path, tmp_path: Path) -> None:
    v = str(cli_vault)
    src = tmp_path / "src"
    src.mkdir()
    big = os.urandom(1_500_000)
    (src / "big.bin").write_bytes(big)
    (src / "small.txt").write_text("small")
    pol = tmp_path / "p.yaml"
    pol.write_text(f"policy: p\nclient: c\nvault: {v}\nsources:\n  - {{name: docs, plugin: files, "
                   f"paths: ['{src}']}}\n")
    env = Cli({"DOBAAS_CATALOG": str(tmp_path / "cat.db")})
    first = json.loads(env("run", str(pol), "--json").stdout)["sources"][0]["snapshot"]
    bad_pack = _flip_data_byte(cli_vault, len(big))

    found = env("verify", "--vault", v, "--json", check=False)
    rep = json.loads(found.stdout)
    assert found.returncode == 3 and rep["chunks_recorded"] >= 1, rep
    assert any(d["path"] == "big.bin" for d in rep["damage"]), rep["damage"]
    assert len(list((cli_vault / "damaged").iterdir())) == 1
    again = json.loads(env("verify", "--vault", v, "--json", check=False).stdout)
    assert again["chunks_recorded"] == 0 and again["chunks_quarantined"] >= 1  # recorded once
    # the restore names the damage (not a bare "missing chunk") and says how it heals
    r = env("restore", "files", first[:12], f"{src}/big.bin", "--vault", v, "--target", str(tmp_path / "r0"),
            check=False)
    assert r.returncode == 3 and "damaged" in r.stderr + r.stdout and "stores it again" in r.stderr + r.stdout

    # the file did not change: without the record, this run would reference the bad chunk again
    healed = json.loads(env("run", str(pol), "--json").stdout)["sources"][0]
    assert healed["files_read"] == 1 and healed["files_unchanged"] == 1, healed
    assert any("read again to repair" in w for w in healed["warnings"]), healed["warnings"]
    after = json.loads(env("verify", "--vault", v, "--json").stdout)
    assert after["ok"] and after["chunks_quarantined"] == 0
    assert after["packs_with_superseded_copies"] == [bad_pack.name]

    # the first snapshot, taken before the damage was found, restores intact: the chunk id now has a good copy
    env("restore", "files", first[:12], f"{src}/big.bin", "--vault", v, "--target", str(tmp_path / "r1"))
    assert (tmp_path / "r1" / "big.bin").read_bytes() == big

    # the next prune rewrites the pack without the bad copy: verify is then clean with nothing left to heal
    env("prune", "--keep-last", "10", "--vault", v)
    assert not bad_pack.exists()
    clean = json.loads(env("verify", "--vault", v, "--json").stdout)
    assert clean["ok"] and clean["packs_with_superseded_copies"] == [] and clean["damage"] == []
    env("restore", "files", first[:12], f"{src}/big.bin", "--vault", v, "--target", str(tmp_path / "r2"))
    assert (tmp_path / "r2" / "big.bin").read_bytes() == big


def test_an_unchanged_block_with_a_damaged_chunk_is_read_again(cli: Cli, cli_vault: Path, tmp_path: Path) -> None:
    v = str(cli_vault)
    img = tmp_path / "d.img"
    img.write_bytes(mixed_bytes(300 * BS, 11))
    original = img.read_bytes()
    first = json.loads(cli("backup", "image", str(img), "--vault", v, "--name", "d", "--json").stdout)
    _flip_data_byte(cli_vault, 10**9)  # the biggest pack: image data
    rep = json.loads(cli("verify", "--vault", v, "--json", check=False).stdout)
    assert rep["chunks_recorded"] == 1 and not rep["ok"]

    data = bytearray(original)
    data[0:BS] = os.urandom(BS)  # a change elsewhere: the damaged block is not in the changed extents
    img.write_bytes(bytes(data))
    ext = tmp_path / "ext.json"
    ext.write_text(json.dumps([[0, BS]]))
    second = json.loads(cli("backup", "image", str(img), "--vault", v, "--name", "d", "--changed-extents", str(ext),
                            "--json").stdout)
    assert second["mode"] == "incremental" and second["bytes_read"] == 2 * BS, second  # the change + the repair
    assert any("read again to repair" in w for w in second["warnings"])
    assert json.loads(cli("verify", "--vault", v, "--json").stdout)["ok"]
    out = tmp_path / "first.img"
    cli("restore", "image", first["id"][:12], "--vault", v, "--output", str(out))
    assert out.read_bytes() == original


def test_damage_the_source_cannot_repair_is_said_and_does_not_block_prune(cli: Cli, cli_vault: Path,
                                                                        tmp_path: Path) -> None:
    v = str(cli_vault)
    img = tmp_path / "d.img"
    img.write_bytes(mixed_bytes(100 * BS, 5))
    cli("backup", "image", str(img), "--vault", v, "--name", "d")
    bad_pack = _flip_data_byte(cli_vault, 10**9)
    cli("verify", "--vault", v, check=False)
    other = tmp_path / "other.img"  # the damaged disk is gone; another source goes on being backed up
    other.write_bytes(mixed_bytes(20 * BS, 6))
    cli("backup", "image", str(other), "--vault", v, "--name", "e")
    p = cli("prune", "--keep-last", "5", "--vault", v, "--json")  # quarantined data is accounted for: no refusal
    assert json.loads(p.stdout)["gc"]["ran"]
    assert bad_pack.exists()  # the only copy, damaged, is kept for salvage while nothing replaces it
    same = tmp_path / "same.img"  # an image that still has the damaged block's data, under the old name
    same.write_bytes(img.read_bytes())
    second = json.loads(cli("backup", "image", str(same), "--vault", v, "--name", "d", "--json").stdout)
    assert second["mode"] == "dedup-full"
    assert json.loads(cli("verify", "--vault", v, "--json").stdout)["ok"]


def test_a_snapshot_that_still_uses_damaged_data_says_so(cli: Cli, cli_vault: Path, tmp_path: Path) -> None:
    """What a plugin carries over from the previous snapshot (a database chain) is not read again: the new
    snapshot must not look whole."""
    from orchestrator.backup.session import BackupSession
    from orchestrator.vault.backend.local import LocalBackend
    from orchestrator.vault.repository import Vault
    from tests.conftest import PASS

    img = tmp_path / "d.img"
    img.write_bytes(mixed_bytes(100 * BS, 3))
    cli("backup", "image", str(img), "--vault", str(cli_vault), "--name", "c/db")
    _flip_data_byte(cli_vault, 10**9)
    cli("verify", "--vault", str(cli_vault), check=False)
    vault = Vault.open(LocalBackend(str(cli_vault)), PASS)
    with BackupSession(vault, "c/db") as s:
        assert s.parent is not None
        snap = s.commit([s.parent.items[0]])  # carried as it is
    assert any("still uses 1 chunk(s) recorded as damaged" in w for w in snap.stats["warnings"]), snap.stats
