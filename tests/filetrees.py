"""Real directory trees for the files tests: every kind of entry the files plugin must keep, what a restore must
reproduce, a policy file, and the ``setup`` fixture (a tree, a vault, a catalog and a policy)."""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

import pytest

from orchestrator.catalog.db import Catalog
from orchestrator.policy.model import load_policy
from orchestrator.vault.backend.local import LocalBackend
from orchestrator.vault.repository import Vault


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
