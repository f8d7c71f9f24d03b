"""The ``dobaas`` command contract, end to end, as scripts and technicians use it."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.conftest import Cli, assert_one_line_error, mixed_bytes

pytestmark = pytest.mark.cli
BS = 4096


def test_contract_end_to_end(cli: Cli, tmp_path: Path) -> None:
    vault = tmp_path / "vault"
    init = json.loads(cli("vault", "init", str(vault), "--kdf-cost", "12", "--block-size", "4KiB", "--json").stdout)
    assert init["location"] == "FR" and init["block_size"] == BS

    img = tmp_path / "disk.img"
    data = bytearray(mixed_bytes(100 * BS, 7))
    img.write_bytes(data)
    full = json.loads(cli("backup", "image", str(img), "--vault", str(vault), "--name", "srv1", "--json").stdout)
    for key in ("id", "bytes_read", "bytes_stored", "seconds"):
        assert key in full
    assert full["bytes_read"] == len(data) and full["mode"] == "full"

    data[5000:5100] = os.urandom(100)
    data[300000:300010] = b"x" * 10
    img.write_bytes(data)
    ext = tmp_path / "extents.json"
    ext.write_text(json.dumps([[5000, 100], [300000, 10]]))
    incr = json.loads(cli("backup", "image", str(img), "--vault", str(vault), "--name", "srv1",
                          "--changed-extents", str(ext), "--json").stdout)
    assert incr["mode"] == "incremental" and incr["bytes_read"] == 2 * BS  # blocks 1 and 73

    env_vault = Cli({"DOBAAS_VAULT": str(vault)})
    snaps = json.loads(env_vault("snapshots", "--json").stdout)
    assert [s["id"] for s in snaps] == [full["id"], incr["id"]]
    assert all({"id", "time", "name"} <= set(s) for s in snaps) and snaps[0]["name"] == "srv1"
    human = cli("snapshots", "--vault", str(vault)).stdout
    assert full["id"][:12] in human and "srv1" in human

    out = tmp_path / "restored.img"
    cli("restore", "image", full["id"][:8], "--vault", str(vault), "--output", str(out))
    assert out.read_bytes() == mixed_bytes(100 * BS, 7)
    again = cli("restore", "image", incr["id"][:8], "--vault", str(vault), "--output", str(out), check=False)
    assert_one_line_error(again, 2, "already exists")
    cli("restore", "image", incr["id"][:8], "--vault", str(vault), "--output", str(out), "--overwrite")
    assert out.read_bytes() == bytes(data)

    ver = cli("verify", "--vault", str(vault), "--json")
    rep = json.loads(ver.stdout)
    assert rep["ok"] and rep["snapshots"] == 2 and rep["damage"] == []

    for _ in range(2):
        cli("backup", "image", str(img), "--vault", str(vault), "--name", "srv1")
    pr = json.loads(cli("prune", "--vault", str(vault), "--keep-last", "2", "--json").stdout)
    assert len(pr["kept"]) == 2 and len(pr["removed"]) == 2 and pr["gc"]["ran"]
    assert len(json.loads(env_vault("snapshots", "--json").stdout)) == 2
    assert json.loads(cli("verify", "--vault", str(vault), "--json").stdout)["ok"]


def test_errors_are_one_line_with_meaningful_exit_codes(cli: Cli, cli_vault: Path, tmp_path: Path) -> None:
    img = tmp_path / "d.img"
    img.write_bytes(mixed_bytes(10 * BS, 1))
    v = str(cli_vault)

    assert_one_line_error(cli("snapshots", "--vault", v, passphrase="wrong", check=False), 4, "wrong passphrase")
    assert_one_line_error(cli("snapshots", "--vault", str(tmp_path / "nope"), check=False), 5, "no vault")
    assert_one_line_error(cli("snapshots", "--vault", v, passphrase=None, check=False), 2, "DOBAAS_PASSPHRASE")

    bad = tmp_path / "bad.json"
    bad.write_text('[[0, 4096], [8192, "x"]]')
    p = cli("backup", "image", str(img), "--vault", v, "--name", "d", "--changed-extents", str(bad), check=False)
    assert_one_line_error(p, 6, "entry 1")
    bad.write_text("[[0, 4096")
    p = cli("backup", "image", str(img), "--vault", v, "--name", "d", "--changed-extents", str(bad), check=False)
    assert_one_line_error(p, 6, "invalid JSON", "line 1")
    bad.write_text("[[0, 999999999]]")
    p = cli("backup", "image", str(img), "--vault", v, "--name", "d", "--changed-extents", str(bad), check=False)
    assert_one_line_error(p, 6, "past the image size")
    p = cli("backup", "image", str(tmp_path / "missing.img"), "--vault", v, "--name", "d", check=False)
    assert_one_line_error(p, 6, "does not exist")

    assert_one_line_error(cli("restore", "image", "ffff", "--vault", v, "--output", str(tmp_path / "o"),
                              check=False), 5, "no snapshot")
    assert_one_line_error(cli("vault", "init", v, "--kdf-cost", "12", check=False), 2, "already exists")
    assert json.loads(cli("snapshots", "--vault", v, "--json").stdout) == []  # nothing was half-written


def test_ambiguous_prefix_and_wrong_item(cli: Cli, cli_vault: Path, tmp_path: Path) -> None:
    img = tmp_path / "d.img"
    ids = set()
    for i in range(20):
        img.write_bytes(mixed_bytes(2 * BS, i))
        ids.add(json.loads(cli("backup", "image", str(img), "--vault", str(cli_vault), "--name", f"n{i}",
                               "--json").stdout)["id"])
    first_chars = [i[0] for i in ids]
    shared = next(c for c in first_chars if first_chars.count(c) > 1)
    p = cli("restore", "image", shared, "--vault", str(cli_vault), "--output", str(tmp_path / "o"), check=False)
    assert_one_line_error(p, 2, "ambiguous")
    p = cli("restore", "image", next(iter(ids)), "--vault", str(cli_vault), "--output", str(tmp_path / "o"),
            "--item", "nope", check=False)
    assert_one_line_error(p, 2, "--item")
