"""Real directory trees for the files tests: every kind of entry the files plugin must keep, what a restore must
reproduce, a policy file, and the ``setup`` fixture (a tree, a vault, a catalog and a policy)."""

from __future__ import annotations

import json
import os
import stat
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from orchestrator.catalog.db import Catalog
from orchestrator.policy.model import load_policy
from orchestrator.vault.backend.local import LocalBackend
from orchestrator.vault.repository import Vault

if TYPE_CHECKING:
    from tests.conftest import Cli  # conftest imports this module


def make_tree(root: Path) -> None:
    """Every kind of entry the files plugin must keep."""
    (root / "docs" / "deep" / "deeper").mkdir(parents=True)
    (root / "docs" / "report.txt").write_text("quarterly report\n" * 100)
    (root / "docs" / "deep" / "deeper" / "note.md").write_text("# note\n")
    (root / "docs" / "Ünïcødé café.txt").write_text("accents")
    (root / "empty-dir").mkdir()
    (root / "data.bin").write_bytes(os.urandom(700_000))
    (root / "skip.tmp").write_text("excluded")
    os.symlink("docs/report.txt", root / "link-to-report")
    os.symlink("/nonexistent/target", root / "dangling")
    os.link(root / "docs" / "report.txt", root / "hardlink-report")
    with open(root / "sparse.img", "wb") as f:
        f.truncate(8 * 2**20)
        f.seek(4 * 2**20)
        f.write(b"middle")
    os.chmod(root / "docs" / "report.txt", 0o640)
    os.chmod(root / "docs" / "deep", 0o750)
    os.chmod(root / "data.bin", 0o600)
    os.chown(root / "data.bin", 1234, 2345)
    os.setxattr(root / "docs" / "report.txt", "user.origin", b"scanner-3")
    (root / "docs" / "note-acl.txt").write_text("acl")
    subprocess.run(["setfacl", "-m", "u:1234:rw", str(root / "docs" / "note-acl.txt")], check=True)
    os.mkfifo(root / "a-fifo")
    os.utime(root / "docs" / "deep" / "deeper" / "note.md", ns=(1_600_000_000_123_456_789,) * 2)


def snapshot_of(root: Path) -> dict[str, tuple]:
    """Everything the restore must reproduce, per relative path."""
    out = {}
    for dirpath, dirs, files in os.walk(root):
        for name in dirs + files:
            p = Path(dirpath) / name
            rel = str(p.relative_to(root))
            st = os.lstat(p)
            kind = stat.S_IFMT(st.st_mode)
            content = None
            if stat.S_ISREG(st.st_mode):
                content = p.read_bytes()
            elif stat.S_ISLNK(st.st_mode):
                content = os.readlink(p)
            xattrs = {} if stat.S_ISLNK(st.st_mode) else {
                n: os.getxattr(p, n) for n in os.listxattr(p) if not n.startswith("security.")}
            mtime = st.st_mtime_ns if not stat.S_ISDIR(st.st_mode) else None  # dir mtimes change as we write
            out[rel] = (kind, stat.S_IMODE(st.st_mode) if not stat.S_ISLNK(st.st_mode) else None, st.st_uid,
                        st.st_gid, content, xattrs, mtime)
    return out


def write_policy(tmp: Path, vault: Path, sources: list[dict], client: str = "acme") -> Path:
    import yaml

    p = tmp / "policy.yaml"
    p.write_text(yaml.safe_dump({"policy": "nightly", "client": client, "vault": str(vault),
                                 "retention": {"keep_last": 7}, "sources": sources}))
    return p


@pytest.fixture
def setup(tmp_path: Path):  # type: ignore[no-untyped-def]
    from tests.conftest import PASS  # here: conftest imports this module

    src = tmp_path / "src"
    src.mkdir()
    make_tree(src)
    vault_dir = tmp_path / "vault"
    Vault.create(LocalBackend(str(vault_dir)), PASS, kdf_cost=12)
    policy = load_policy(str(write_policy(tmp_path, vault_dir, [
        {"name": "documents", "plugin": "files", "paths": [str(src)], "exclude": ["*.tmp"]}])))
    vault = Vault.open(LocalBackend(str(vault_dir)), PASS)
    catalog = Catalog(f"sqlite:///{tmp_path / 'catalog.db'}")
    return src, vault, catalog, policy, tmp_path


def rich_tree(root: Path) -> None:
    """make_tree's entries plus what an end-of-contract export must also keep: a default ACL, a character
    device, a name that is not UTF-8, a large sparse file, binary xattr values and a second hard link group."""
    make_tree(root)
    (root / "skip.tmp").unlink()
    subprocess.run(["setfacl", "-d", "-m", "u:1234:rwx,g:55:r-x", str(root / "docs" / "deep")], check=True)
    os.mknod(root / "null-dev", 0o620 | 0o020000, os.makedev(1, 3))
    latin = os.fsencode(str(root / "docs")) + b"/caf\xe9-latin1.txt"
    with open(latin, "wb") as f:
        f.write(b"nom en Latin-1\n")
    with open(root / "big-sparse.img", "wb") as f:
        f.truncate(64 * 2**20)
        for off in (0, 20 * 2**20, 63 * 2**20):
            f.seek(off)
            f.write(os.urandom(300_000)[: 2**20 - 1])
    os.setxattr(root / "data.bin", "user.blob", bytes(range(256)))
    os.link(root / "data.bin", root / "docs" / "data-again.bin")
    os.utime(root / "docs", ns=(1_500_000_000_987_654_321,) * 2)


@pytest.fixture
def files_vault(tmp_path: Path, cli: Cli):  # type: ignore[no-untyped-def]
    """rich_tree backed up once by `dobaas run` into a new vault: (tree, vault, snapshot, policy file)."""
    src = tmp_path / "src"
    src.mkdir()
    rich_tree(src)
    vault = tmp_path / "vault"
    cli("vault", "init", str(vault), "--kdf-cost", "12")
    policy = write_policy(tmp_path, vault, [{"name": "documents", "plugin": "files", "paths": [str(src)]}])
    run = json.loads(cli("run", str(policy), "--json").stdout)
    assert run["exit_code"] == 0 and run["sources"][0]["status"] == "ok", run
    snap = json.loads(cli("snapshots", "--vault", str(vault), "--json").stdout)[0]
    return src, vault, snap, policy
