"""The on-disk index of large vaults (forced here with a threshold of 0 chunks): backups deduplicate through it,
restores read through it, new index objects go to the overlay, consolidation rebuilds it, a damaged or stale
table is rebuilt and never trusted."""

from __future__ import annotations

import glob
import json
import os
from pathlib import Path

import pytest

from orchestrator.vault.backend.local import LocalBackend
from orchestrator.vault.diskindex import REC, DiskTable
from orchestrator.vault.index import DiskChunkMap
from orchestrator.vault.repository import Vault
from tests.conftest import PASS, Cli, mixed_bytes

pytestmark = pytest.mark.vault
BS = 4096


@pytest.fixture(autouse=True)
def _on_disk(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DOBAAS_INDEX_MEMORY_CHUNKS", "0")


def table_dir() -> str:
    found = [d for d in glob.glob(os.path.join(os.environ["DOBAAS_CACHE_DIR"], "index", "*")) if os.path.isdir(d)]
    assert len(found) == 1, found
    return found[0]


def backup(cli: Cli, vault: Path, img: Path, *extra: str) -> dict:
    return json.loads(cli("backup", "image", str(img), "--vault", str(vault), "--name", "d", "--json",
                          *extra).stdout)


def test_backups_and_restores_go_through_the_table(cli_vault: Path, cli: Cli, tmp_path: Path) -> None:
    img = tmp_path / "d.img"
    data = bytearray(mixed_bytes(300 * BS, 3))
    img.write_bytes(bytes(data))
    first = backup(cli, cli_vault, img)
    data[50 * BS:52 * BS] = os.urandom(2 * BS)
    img.write_bytes(bytes(data))
    second = backup(cli, cli_vault, img)  # a full read: every unchanged block is found in the table
    assert second["chunks_new"] <= 3 and second["chunks_reused"] > 100, second
    table = DiskTable(table_dir())
    assert table.unique >= first["chunks_new"]
    table.close()
    v = Vault.open(LocalBackend(str(cli_vault)), PASS)
    idx = v.load_index()
    assert isinstance(idx.chunks, DiskChunkMap)
    assert len(idx.chunks) == len(set(idx.chunks)) >= first["chunks_new"] + second["chunks_new"]
    cli("restore", "image", second["id"], "--vault", str(cli_vault), "--output", str(tmp_path / "out.img"))
    assert (tmp_path / "out.img").read_bytes() == bytes(data)
    assert json.loads(cli("verify", "--vault", str(cli_vault), "--json").stdout)["ok"]

    # consolidation (prune) removes index objects: the table is rebuilt from what is left, and stays right
    cli("prune", "--vault", str(cli_vault), "--keep-last", "1")
    cli("restore", "image", second["id"], "--vault", str(cli_vault), "--output", str(tmp_path / "out2.img"))
    assert (tmp_path / "out2.img").read_bytes() == bytes(data)
    assert json.loads(cli("verify", "--vault", str(cli_vault), "--json").stdout)["ok"]


def test_a_damaged_or_missing_table_is_rebuilt(cli_vault: Path, cli: Cli, tmp_path: Path) -> None:
    img = tmp_path / "d.img"
    img.write_bytes(mixed_bytes(200 * BS, 4))
    snap = backup(cli, cli_vault, img)
    backup(cli, cli_vault, img)  # the first load that finds index objects builds the table
    d = table_dir()
    with open(os.path.join(d, "table.bin"), "r+b") as f:  # cut short: its size no longer matches
        f.truncate(os.path.getsize(os.path.join(d, "table.bin")) - REC)
    again = backup(cli, cli_vault, img)
    assert again["chunks_new"] <= 1, again  # rebuilt, so everything was found
    os.unlink(os.path.join(d, "meta.json"))
    cli("restore", "image", snap["id"], "--vault", str(cli_vault), "--output", str(tmp_path / "o.img"))
    assert (tmp_path / "o.img").read_bytes() == img.read_bytes()
    # a table whose bytes were altered never yields wrong data: the read fails authentication, loudly
    with open(os.path.join(table_dir(), "table.bin"), "r+b") as f:
        raw = bytearray(f.read())
        for i in range(0, len(raw), REC):
            raw[i + 38:i + 42] = (int.from_bytes(raw[i + 38:i + 42], "little") + 16).to_bytes(4, "little")  # offset
        f.seek(0)
        f.write(raw)
    p = cli("restore", "image", snap["id"], "--vault", str(cli_vault), "--output", str(tmp_path / "bad.img"),
            check=False)
    assert p.returncode == 3 and "Traceback" not in p.stderr, p.stderr


def test_backups_in_several_processes_share_one_table(cli_vault: Path, cli: Cli, tmp_path: Path) -> None:
    seed = tmp_path / "seed.img"
    seed.write_bytes(mixed_bytes(200 * BS, 5))
    backup(cli, cli_vault, seed)  # index objects exist: every next load builds or opens the table
    imgs = []
    for i in range(4):
        p = tmp_path / f"d{i}.img"
        p.write_bytes(mixed_bytes(100 * BS, 10 + i) + mixed_bytes(100 * BS, 5)[: 100 * BS])
        imgs.append(p)
    procs = [cli.popen("backup", "image", str(p), "--vault", str(cli_vault), "--name", f"p{i}", "--json")
             for i, p in enumerate(imgs)]
    outs = [p.communicate(timeout=300) for p in procs]
    for p, (out, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, err
        assert json.loads(out)["chunks_reused"] > 0  # the shared part was found through the table
    assert json.loads(cli("verify", "--vault", str(cli_vault), "--json").stdout)["ok"]
    for i, p in enumerate(imgs):
        snap = json.loads(cli("snapshots", "--vault", str(cli_vault), "--name", f"p{i}", "--json").stdout)[0]
        cli("restore", "image", snap["id"], "--vault", str(cli_vault), "--output", str(tmp_path / f"o{i}.img"))
        assert (tmp_path / f"o{i}.img").read_bytes() == p.read_bytes()
