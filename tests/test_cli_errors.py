"""Every mistake a user can make on the command line is one `dobaas: error:` line with the documented exit
code, never an internal error or a traceback."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.conftest import Cli, assert_one_line_error

pytestmark = pytest.mark.cli


def test_usage_mistakes_are_one_line(tmp_path: Path, cli: Cli, cli_vault: Path) -> None:
    img = tmp_path / "d.img"
    img.write_bytes(os.urandom(64 * 1024))
    v = str(cli_vault)
    sid = json.loads(cli("backup", "image", str(img), "--vault", v, "--name", "d", "--json").stdout)["id"]
    env_less = Cli({"DOBAAS_VAULT": ""})
    assert_one_line_error(env_less("snapshots", check=False), 2, "DOBAAS_VAULT")
    assert_one_line_error(cli("snapshots", "--no-such-option", check=False), 2, "--no-such-option",
                          "dobaas snapshots --help")
    assert_one_line_error(cli("restore", "image", sid[:12], "--vault", v, "--output",
                              str(tmp_path / "missing" / "dir" / "x.img"), check=False), 1, "missing/dir")
    for bad in ("", "../../x", "a//b", "x/./y", "tab\there"):
        assert_one_line_error(cli("backup", "image", str(img), "--vault", v, "--name", bad, check=False), 2,
                              "--name")
    deep = tmp_path / "deep.json"
    deep.write_text("[" * 100_000 + "]" * 100_000)
    assert_one_line_error(cli("backup", "image", str(img), "--vault", v, "--name", "d", "--changed-extents",
                              str(deep), check=False), 6, "nested too deeply")
    (tmp_path / "afile").write_text("x")
    for where in ("/proc/no-vault-here", str(tmp_path / "afile" / "sub")):
        assert_one_line_error(cli("vault", "init", where, "--kdf-cost", "12", check=False), 8,
                              "cannot create a vault")
    # vault init honours DOBAAS_VAULT like every other command
    by_env = Cli({"DOBAAS_VAULT": str(tmp_path / "v-env")})
    by_env("vault", "init", "--kdf-cost", "12")
    assert (tmp_path / "v-env" / "config").exists()


def test_damaged_key_file_is_not_a_wrong_passphrase_and_passphrases_are_bytes(tmp_path: Path, cli: Cli) -> None:
    latin1 = os.fsdecode(b"caf\xe9 cr\xe8me")  # typed in a Latin-1 terminal: not UTF-8
    v = tmp_path / "v"
    cli("vault", "init", str(v), "--kdf-cost", "12", passphrase=latin1)
    assert cli("snapshots", "--vault", str(v), passphrase=latin1).returncode == 0
    assert_one_line_error(cli("snapshots", "--vault", str(v), passphrase="café crème", check=False), 4,
                          "wrong passphrase")
    key = next((v / "keys").iterdir())
    os.chmod(key, 0o644)
    doc = json.loads(key.read_text())
    w = doc["wrapped"]
    doc["wrapped"] = w[:10] + ("A" if w[10] != "A" else "B") + w[11:]  # one character of the ciphertext
    key.write_text(json.dumps(doc))
    assert_one_line_error(cli("snapshots", "--vault", str(v), passphrase=latin1, check=False), 3,
                          "is damaged", "checksum")
    # a tampered KDF cost cannot make a command allocate terabytes
    doc["wrapped"], doc["kdf"]["m"] = w, 2**40
    key.write_text(json.dumps(doc))
    assert_one_line_error(cli("snapshots", "--vault", str(v), passphrase=latin1, check=False), 3, "is damaged")
