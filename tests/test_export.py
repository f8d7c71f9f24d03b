"""`dobaas export`: snapshots handed back in standard formats, read back with the common tools (GNU tar, bsdtar,
rsync, qemu-img, sha256sum, a fresh MariaDB), resumable after kill -9."""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import PASS, Cli, mixed_bytes
from tests.filetrees import write_policy

pytestmark = pytest.mark.export


def rsync_diff(a: Path, b: Path) -> str:
    """What rsync would change to make b like a, owners, modes, times, hard links, ACLs, xattrs and content
    included; empty when the trees are equal."""
    p = subprocess.run(["rsync", "-aHAX", "--checksum", "--dry-run", "--itemize-changes", "--numeric-ids",
                        f"{a}/", f"{b}/"], capture_output=True, check=True)
    return p.stdout.decode("utf-8", "backslashreplace")


def test_tree_exports_as_pax_tar_that_gnu_tar_and_bsdtar_restore_exactly(files_vault, tmp_path: Path,
                                                                       cli: Cli) -> None:
    src, vault, snap, _ = files_vault
    out = tmp_path / "export"
    rep = json.loads(cli("export", snap["id"][:10], "--vault", str(vault), "--output", str(out), "--json").stdout)
    assert rep["snapshots"] == 1 and rep["files"] == 2 and not rep["damaged"], rep  # the tar + snapshot.json
    tars = list(out.rglob("*.tar"))
    assert len(tars) == 1, tars
    # GNU tar and bsdtar, as the read-me tells the client to run them
    gnu, bsd = tmp_path / "gnu", tmp_path / "bsd"
    gnu.mkdir()
    bsd.mkdir()
    subprocess.run(["tar", "--xattrs", "--xattrs-include=*", "--acls", "--numeric-owner", "-xpf", str(tars[0]),
                    "-C", str(gnu)], check=True)
    subprocess.run(["bsdtar", "-xpf", str(tars[0]), "-C", str(bsd)], check=True)
    for extracted in (gnu / "src", bsd / "src"):
        assert rsync_diff(src, extracted) == "", extracted
        assert os.path.getsize(extracted / "big-sparse.img") == 64 * 2**20
        # holes stayed holes (at the granularity of the stored chunks)
        assert os.stat(extracted / "big-sparse.img").st_blocks * 512 < 24 * 2**20
    assert os.stat(gnu / "src" / "docs" / "deep" / "deeper" / "note.md").st_mtime_ns == 1_600_000_000_123_456_789
    # the manifest and SHA256SUMS agree with sha256sum run on the files
    check = subprocess.run(["sha256sum", "-c", "SHA256SUMS"], cwd=out, capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    manifest = json.loads((out / "MANIFEST.json").read_text())
    for e in manifest["files"]:
        got = subprocess.run(["sha256sum", out / e["path"]], capture_output=True, text=True, check=True)
        assert got.stdout.split()[0] == e["sha256"] and e["snapshot"] == snap["id"] and e["source"] == snap["name"]
        assert e["size"] == os.path.getsize(out / e["path"])
    fr, en = (out / "LISEZMOI.txt").read_text(), (out / "README.txt").read_text()
    assert "tar --xattrs" in fr and "Archive tar POSIX" in fr and "POSIX (pax) tar archive" in en


@pytest.mark.parametrize("reader", ["gnu", "bsd", "python"])
def test_sparse_regions_that_end_inside_a_block_extract_the_same_with_every_tar(tmp_path: Path,
                                                                                 reader: str) -> None:
    """Chunk boundaries fall anywhere; GNU tar reads each sparse region's data in whole 512-byte blocks while
    bsdtar and Python read regions back to back (a region of 4482551 bytes once shifted the next for GNU tar)."""
    import hashlib
    import tarfile

    from orchestrator.export.tar import write_tar

    rnd = [mixed_bytes(n, seed) for n, seed in ((4097, 1), (300_001, 2), (333, 3), (77_777, 4))]
    layout = [rnd[0], bytes(100_003), rnd[1], bytes(70_001), rnd[2], rnd[3], bytes(65_537)]
    store = {hashlib.sha256(b).digest(): b for b in layout}
    refs = [[hashlib.sha256(b).hexdigest(), len(b)] for b in layout]
    entry = {"p": "odd.img", "t": "f", "m": 0o644, "mt": 1_600_000_000_000_000_000, "c": refs}
    meta = {b"piece": json.dumps(entry).encode() + b"\n"}
    archive = tmp_path / "a.tar"
    with open(archive, "wb") as out:
        st = write_tar(lambda cid, _where: store[cid], {"name": "t", "map": [b"piece".hex()]},
                       lambda cid: meta[cid], out, lambda h, n: store[bytes.fromhex(h)] == bytes(n))
    assert st.sparse_files == 1
    dest = tmp_path / "x"
    dest.mkdir()
    if reader == "python":
        with tarfile.open(archive) as tf:
            tf.extractall(dest, filter="fully_trusted")
    else:
        subprocess.run(["tar" if reader == "gnu" else "bsdtar", "-xf", str(archive), "-C", str(dest)], check=True)
    assert (dest / "root" / "odd.img").read_bytes() == b"".join(layout)


def test_tree_exports_as_directory(files_vault, tmp_path: Path, cli: Cli) -> None:
    src, vault, snap, _ = files_vault
    out = tmp_path / "export"
    rep = json.loads(cli("export", snap["id"], "--vault", str(vault), "--format", "dir", "--output", str(out),
                         "--json").stdout)
    folder = next(p for p in out.rglob("src") if p.is_dir())
    assert rsync_diff(src, folder) == ""
    regular = sum(1 for p in src.rglob("*") if p.is_file() and not p.is_symlink() and not p.is_fifo()
                  and not p.is_char_device())
    assert rep["files"] == regular + 1  # every regular file (hard links once each path) + snapshot.json
    manifest = json.loads((out / "MANIFEST.json").read_text())
    (latin,) = [e for e in manifest["files"] if "path_base64" in e]
    assert base64.b64decode(latin["path_base64"]).endswith(b"/caf\xe9-latin1.txt") and "\\xe9" in latin["path"]
    assert subprocess.run(["sha256sum", "-c", "--quiet", "SHA256SUMS"], cwd=out).returncode == 0


def test_client_export_resumes_after_kill_and_estimates_the_60_days(tmp_path: Path, cli: Cli) -> None:
    """Two sources, two snapshots each; the export killed with SIGKILL half-way; run again: the parts done are
    skipped, the rest written, and the whole folder checks against SHA256SUMS."""
    vault = tmp_path / "vault"
    cli("vault", "init", str(vault), "--kdf-cost", "12")
    imgs = tmp_path / "imgs"
    imgs.mkdir()
    for i, name in enumerate(("web", "db")):
        (imgs / f"{name}.img").write_bytes(mixed_bytes(24 * 2**20, seed=i))
        for _ in range(2):
            cli("backup", "image", str(imgs / f"{name}.img"), "--vault", str(vault), "--name", f"acme/{name}")
    cli("backup", "image", str(imgs / "web.img"), "--vault", str(vault), "--name", "other/web")
    out = tmp_path / "export"
    args = ["export", "--client", "acme", "--vault", str(vault), "--format", "qcow2", "--output", str(out)]
    p = cli.popen(*args)
    state = out / ".dobaas-export" / "state.json"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and p.poll() is None:
        if state.exists() and json.loads(state.read_text() or "{}").get("parts"):
            break
        time.sleep(0.02)
    p.send_signal(signal.SIGKILL)
    p.wait()
    done_before = len(json.loads(state.read_text())["parts"])
    assert 1 <= done_before < 8, done_before  # killed with work left
    rep = json.loads(cli(*args, "--json").stdout)
    assert rep["parts_resumed"] == done_before and rep["snapshots"] == 4, rep
    assert rep["files"] == 8  # 4 disks + 4 snapshot.json, nothing of client "other"
    assert not list(out.rglob("*.partial")) and not (out / "other").exists()
    assert subprocess.run(["sha256sum", "-c", "--quiet", "SHA256SUMS"], cwd=out).returncode == 0
    for q in out.rglob("*.qcow2"):
        info = json.loads(subprocess.run(["qemu-img", "info", "--output=json", str(q)], capture_output=True,
                                         check=True).stdout)
        assert info["format"] == "qcow2" and info["virtual-size"] == 24 * 2**20
        name = q.parent.parent.name
        assert subprocess.run(["qemu-img", "compare", "-q", str(q), str(imgs / f"{name}.img")]).returncode == 0
    est = rep["estimate"]
    assert est["bytes"] == 4 * 24 * 2**20 and est["fits"] is True and est["within_days"] == 60


@pytest.mark.parametrize("fmt", ["raw", "qcow2", "vhdx", "vmdk"])
def test_image_formats_convert_back_to_the_snapshot(tmp_path: Path, cli: Cli, fmt: str) -> None:
    vault = tmp_path / "vault"
    cli("vault", "init", str(vault), "--kdf-cost", "12", "--block-size", "4096")
    img = tmp_path / "disk.img"
    img.write_bytes(mixed_bytes(5 * 2**20 + 4096 * 3, seed=7))  # not a multiple of a MiB
    snap = json.loads(cli("backup", "image", str(img), "--vault", str(vault), "--name", "acme/srv",
                          "--json").stdout)
    out = tmp_path / "out"
    cli("export", snap["id"], "--vault", str(vault), "--format", fmt, "--output", str(out))
    (exported,) = out.rglob(f"*.{fmt}")
    info = json.loads(subprocess.run(["qemu-img", "info", "--output=json", str(exported)], capture_output=True,
                                     check=True).stdout)
    assert info["format"] == fmt and info["virtual-size"] >= img.stat().st_size
    back = tmp_path / "back.raw"
    subprocess.run(["qemu-img", "convert", "-O", "raw", str(exported), str(back)], check=True)
    with open(back, "rb+") as f:  # VHDX/VMDK round the virtual size up to their own granularity
        f.truncate(img.stat().st_size)
    assert back.read_bytes() == img.read_bytes()


def test_export_refuses_unknown_formats_and_both_selections(files_vault, tmp_path: Path, cli: Cli) -> None:
    from tests.conftest import assert_one_line_error

    _, vault, snap, _ = files_vault
    out = str(tmp_path / "o")
    assert_one_line_error(cli("export", snap["id"], "--vault", str(vault), "--format", "zip", "--output", out,
                              check=False), 2, "--format")
    assert_one_line_error(cli("export", snap["id"], "--client", "acme", "--vault", str(vault), "--output", out,
                              check=False), 2, "either a SNAPSHOT or --client")
    assert_one_line_error(cli("export", "--client", "nobody", "--vault", str(vault), "--output", out,
                              check=False), 5, "no snapshot of client 'nobody'")


def damage_file(vault: Path, snapshot_id: str, path: str) -> None:
    """Flip a byte inside the first chunk of ``path`` in its pack (bit rot in the vault)."""
    from orchestrator.vault.backend.local import LocalBackend
    from orchestrator.vault.repository import Vault
    from orchestrator.vault.tree import iter_tree

    v = Vault.open(LocalBackend(str(vault)), PASS)
    s = v.read_snapshot(snapshot_id)
    entry = next(e for e in iter_tree(s.items[0], lambda c: v.read_chunk(c)) if e["p"] == path)
    loc = v.load_index().chunks[bytes.fromhex(entry["c"][0][0])]
    pack = next(p for p in (vault / "data").rglob("*") if p.is_file() and p.name == loc.pack)
    raw = bytearray(pack.read_bytes())
    raw[loc.offset + loc.length // 2] ^= 0xFF  # inside that chunk, whatever its sealed length
    pack.write_bytes(bytes(raw))


def test_damaged_chunk_costs_one_file_and_the_archive_stays_readable(files_vault, tmp_path: Path,
                                                                    cli: Cli) -> None:
    src, vault, snap, _ = files_vault
    damage_file(vault, snap["id"], "docs/report.txt")
    out = tmp_path / "export"
    p = cli("export", snap["id"], "--vault", str(vault), "--output", str(out), check=False)
    assert p.returncode == 3, p.stderr
    assert "docs/report.txt" in p.stderr and "damaged" in p.stderr
    (tar,) = out.rglob("*.tar")
    x = tmp_path / "x"
    x.mkdir()
    subprocess.run(["tar", "-xpf", str(tar), "-C", str(x)], check=True)
    assert (x / "src" / "docs" / "deep" / "deeper" / "note.md").read_text() == "# note\n"
    assert (x / "src" / "data.bin").read_bytes() == (src / "data.bin").read_bytes()


def test_mysql_snapshot_exports_dumps_that_load_into_a_fresh_server(mariadb, tmp_path: Path, cli: Cli) -> None:
    """The exported SQL dump loads into another database of the real MariaDB and gives the row counts and
    CHECKSUM TABLE values recorded inside the backup's snapshot."""
    db = "export_src"
    mariadb.sql(f"DROP DATABASE IF EXISTS {db}; CREATE DATABASE {db} CHARACTER SET utf8mb4; USE {db}; "
                "CREATE TABLE t (id INT PRIMARY KEY, v VARCHAR(40)) ENGINE=InnoDB; "
                "INSERT INTO t VALUES (1, 'un'), (2, 'deux'), (3, 'trois é');")
    vault = tmp_path / "vault"
    cli("vault", "init", str(vault), "--kdf-cost", "12")
    policy = write_policy(tmp_path, vault, [{"name": "db", "plugin": "mysql", "host": "127.0.0.1",
                                             "port": mariadb.port, "user": "root", "databases": [db],
                                             "staging_dir": str(tmp_path / "staging")}])
    assert json.loads(cli("run", str(policy), "--json").stdout)["exit_code"] == 0
    snap = json.loads(cli("snapshots", "--vault", str(vault), "--json").stdout)[0]
    out = tmp_path / "export"
    cli("export", snap["id"], "--vault", str(vault), "--output", str(out))
    (dump,) = out.rglob(f"{db}.sql")
    assert "SQL dump of one database" in (out / "README.txt").read_text()
    mariadb.sql("DROP DATABASE IF EXISTS export_back; CREATE DATABASE export_back CHARACTER SET utf8mb4")
    subprocess.run(["mariadb", "--no-defaults", "-h127.0.0.1", f"-P{mariadb.port}", "-uroot", "export_back"],
                   input=dump.read_bytes(), check=True, capture_output=True)
    recorded = json.loads(next(out.rglob("snapshot.json")).read_text())["meta"]["tables"][db]["t"]
    got = mariadb.sql("CHECKSUM TABLE export_back.t").split()
    assert int(got[1]) == recorded["checksum"] and recorded["rows"] == 3
    assert mariadb.sql("SELECT v FROM export_back.t WHERE id = 3").strip() == "trois é"


def test_full_export_disk_is_a_clear_error_and_the_same_command_resumes(tmp_path: Path, cli: Cli) -> None:
    """The export disk fills up: a one-line error naming what failed, no half file under a final name; after
    space is freed (here: the tmpfs grown), the same command finishes and SHA256SUMS checks."""
    from tests.conftest import assert_one_line_error

    vault = tmp_path / "vault"
    cli("vault", "init", str(vault), "--kdf-cost", "12")
    img = tmp_path / "d.img"
    for i, name in enumerate(("a", "b")):
        img.write_bytes(os.urandom(3 * 2**20) + bytes(2**20) + mixed_bytes(2**20, seed=i))
        cli("backup", "image", str(img), "--vault", str(vault), "--name", f"acme/{name}")
    out = tmp_path / "out"
    out.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=6m", "tmpfs", str(out)], check=True)
    try:
        args = ["export", "--client", "acme", "--vault", str(vault), "--output", str(out), "--format", "raw"]
        p = cli(*args, check=False)
        assert_one_line_error(p, 8, "No space left on device", "run the same command again")
        finals = [f for f in out.rglob("*.raw")]
        assert all(f.stat().st_size == 5 * 2**20 for f in finals)  # a final name only for a complete file
        subprocess.run(["mount", "-o", "remount,size=64m", str(out)], check=True)
        rep = json.loads(cli(*args, "--json").stdout)
        assert rep["parts_resumed"] >= 1 and rep["files"] == 4
        assert subprocess.run(["sha256sum", "-c", "--quiet", "SHA256SUMS"], cwd=out).returncode == 0
    finally:
        subprocess.run(["umount", "-l", str(out)], check=True)
