"""Files plugin, policy runs, catalog browsing and file restores, end to end on real directory trees."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from orchestrator.backup.runner import run_policy
from orchestrator.catalog.db import Catalog
from orchestrator.catalog.rebuild import rebuild
from orchestrator.policy.model import load_policy
from orchestrator.restore.files import restore_files
from orchestrator.vault.backend.local import LocalBackend
from orchestrator.vault.repository import Vault
from orchestrator.vault.verify import verify_vault
from tests.conftest import PASS, Cli, assert_one_line_error
from tests.filetrees import snapshot_of, write_policy

pytestmark = pytest.mark.files


def test_round_trip_keeps_content_and_metadata(setup) -> None:  # type: ignore[no-untyped-def]
    src, vault, catalog, policy, tmp = setup
    rep = run_policy(policy, vault, catalog)
    res = rep.sources[0]
    assert rep.exit_code == 0 and res.status == "ok", res
    out = tmp / "restored"
    r = restore_files(vault, vault.read_snapshot(res.snapshot), [str(src)], str(out), "never", False, catalog)
    assert r.status == "ok" and not r.errors, r
    want = {k: v for k, v in snapshot_of(src).items() if not k.endswith(".tmp")}
    got = snapshot_of(out)
    assert got.keys() == want.keys()
    for k in want:
        assert got[k] == want[k], k
    assert os.stat(out / "hardlink-report").st_ino == os.stat(out / "docs" / "report.txt").st_ino
    assert os.stat(out / "sparse.img").st_blocks * 512 < 2**20  # the hole stayed a hole
    acl = subprocess.run(["getfacl", "-cp", str(out / "docs" / "note-acl.txt")], capture_output=True, text=True)
    assert "user:1234:rw-" in acl.stdout
    assert verify_vault(vault).ok


def test_incremental_reads_only_changed_files(setup) -> None:  # type: ignore[no-untyped-def]
    src, vault, catalog, policy, _tmp = setup
    first = run_policy(policy, vault, catalog).sources[0]
    assert first.files_read == first.files - 1  # the hard link is not read twice
    (src / "docs" / "report.txt").write_text("changed\n")  # also changes the hard link's inode
    (src / "new.txt").write_text("new")
    second = run_policy(policy, vault, catalog).sources[0]
    assert second.mode == "incremental"
    assert second.files_read == 2 and second.bytes_read == len("changed\n") + 3
    assert second.files_unchanged == first.files - 2
    third = run_policy(policy, vault, catalog).sources[0]
    assert third.files_read == 0 and third.bytes_read == 0


def test_unreadable_and_changing_files_are_reported(setup, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    src, vault, catalog, policy, _tmp = setup
    from orchestrator.plugin.localtree import walk as walker

    real_open = walker.LocalTree.open

    def flaky_open(self, entry):  # type: ignore[no-untyped-def]
        if entry["p"] == "docs/deep/deeper/note.md":
            raise PermissionError(13, "Permission denied")
        f = real_open(self, entry)
        if entry["p"] == "data.bin":  # a writer appends while we read
            with open(src / "data.bin", "ab") as w:
                w.write(b"appended")
        return f

    monkeypatch.setattr(walker.LocalTree, "open", flaky_open)
    rep = run_policy(policy, vault, catalog)
    res = rep.sources[0]
    assert res.status == "partial" and rep.exit_code == 9
    assert any("note.md" in e and "Permission denied" in e for e in res.errors)
    assert any("data.bin" in w and "changed while being read" in w for w in res.warnings)
    # the unreadable file is listed in the snapshot with its error, not silently missing
    rows = catalog.find("note.md")
    assert rows and rows[0]["snapshot_count"] == 1 and rows[0]["last_snapshot"] == res.snapshot


def test_unreadable_file_as_unprivileged_user(tmp_path: Path, cli: Cli) -> None:
    """The same through the real command, run as 'nobody' on a file it may not read."""
    base = Path(subprocess.run(["mktemp", "-d", "/tmp/dobaas-nobody-XXXXXX"], capture_output=True, text=True,
                               check=True).stdout.strip())
    try:
        os.chmod(base, 0o777)
        (base / "src").mkdir()
        (base / "src" / "ok.txt").write_text("readable")
        (base / "src" / "secret.txt").write_text("root only")
        os.chmod(base / "src" / "secret.txt", 0o600)
        os.chmod(base / "src", 0o755)
        write_policy(base, base / "vault", [{"name": "docs", "plugin": "files", "paths": [str(base / "src")]}])
        env = {**os.environ, "DOBAAS_PASSPHRASE": PASS, "DOBAAS_CATALOG": str(base / "cat.db")}
        nobody = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--"]
        dobaas = cli.popen  # noqa: F841 (documenting that the same binary is used)
        from tests.conftest import DOBAAS

        subprocess.run([*nobody, DOBAAS, "vault", "init", str(base / "vault"), "--kdf-cost", "12"], env=env,
                       check=True, capture_output=True)
        p = subprocess.run([*nobody, DOBAAS, "run", str(base / "policy.yaml"), "--json"], env=env,
                           capture_output=True, text=True)
        assert p.returncode == 9, p.stderr
        res = json.loads(p.stdout)["sources"][0]
        assert res["status"] == "partial" and res["snapshot"]
        assert any("secret.txt" in e and "Permission denied" in e for e in res["errors"])
    finally:
        subprocess.run(["rm", "-rf", str(base)], check=False)


def test_browse_by_date_find_and_catalog_rebuild(setup) -> None:  # type: ignore[no-untyped-def]
    src, vault, catalog, policy, tmp = setup
    ids = []
    for i in range(3):
        (src / "docs" / f"day{i}.xlsx").write_text(f"day {i}")
        ids.append(run_policy(policy, vault, catalog).sources[0].snapshot)
        time.sleep(0.01)
    snaps = catalog.snapshots(source="documents")
    assert [s["id"] for s in snaps] == ids
    names = [r["name"] for r in catalog.ls(snaps[0], str(src / "docs"))]
    assert names == sorted(["deep", "day0.xlsx", "note-acl.txt", "report.txt", "Ünïcødé café.txt"])
    assert {r["name"] for r in catalog.ls(snaps[2], str(src / "docs"))} >= {"day1.xlsx", "day2.xlsx"}
    assert [r["path"] for r in catalog.ls(snaps[0], None)] == [str(src)]
    found = catalog.find("*.xlsx")
    assert {f["path"].rsplit("/", 1)[1]: f["snapshot_count"] for f in found} == {
        "day0.xlsx": 3, "day1.xlsx": 2, "day2.xlsx": 1}
    from datetime import datetime

    at = datetime.fromisoformat(snaps[1]["time"])
    assert catalog.snapshot_at("documents", at)["id"] == ids[1]
    since = catalog.find("*.xlsx", since=at)
    assert since and all(f["first_snapshot"] != ids[0] and f["snapshot_count"] <= 2 for f in since)

    fresh = Catalog(f"sqlite:///{tmp / 'rebuilt.db'}")
    rebuild(vault, fresh)
    assert _catalog_view(fresh) == _catalog_view(catalog)


def _catalog_view(c: Catalog) -> tuple:
    snaps = c.snapshots()
    return (
        [(s["id"], s["seq"], s["time"], s["source"], s["client"]) for s in snaps],
        [sorted((r["path"], r["type"], r["size"], r["mtime_ns"], r["mode"]) for r in c.ls(s, p))
         for s in snaps for p in (None, *(row["path"] for row in c.ls(s, None)))],
        c.find("*"),
    )


def test_restore_overwrite_modes_and_in_place(setup) -> None:  # type: ignore[no-untyped-def]
    src, vault, catalog, policy, _tmp = setup
    sid = run_policy(policy, vault, catalog).sources[0].snapshot
    snap = vault.read_snapshot(sid)
    report = src / "docs" / "report.txt"
    original = report.read_bytes()
    with pytest.raises(Exception, match="--in-place"):
        restore_files(vault, snap, [str(report)], str(src / "docs"), "always", False, catalog)
    report.write_text("edited after the backup")
    r = restore_files(vault, snap, [str(report)], None, "never", True, catalog)
    assert r.skipped and report.read_text() == "edited after the backup"
    r = restore_files(vault, snap, [str(report)], None, "if-newer", True, catalog)
    assert r.skipped  # the file on disk is newer than the backup
    os.utime(report, ns=(1, 1))
    r = restore_files(vault, snap, [str(report)], None, "if-newer", True, catalog)
    assert not r.skipped and report.read_bytes() == original
    report.write_text("edited again")
    restore_files(vault, snap, [str(report)], None, "always", True, catalog)
    assert report.read_bytes() == original
    audit = catalog.restores()
    assert len(audit) == 4 and audit[-1]["snapshot_id"] == sid and json.loads(audit[-1]["paths"]) == [str(report)]
    assert {a["user"] for a in audit} == {"root"} or all(a["user"] for a in audit)


def test_restore_refuses_unsafe_paths_and_symlinked_parents(tmp_path: Path) -> None:
    from orchestrator.restore.local_sink import LocalSink
    from orchestrator.restore.tree import restore_tree
    from orchestrator.vault.tree import TreeWriter

    store: dict[bytes, bytes] = {}

    def put(data: bytes) -> bytes:
        cid = os.urandom(32)
        store[cid] = data
        return cid

    w = TreeWriter(put)
    for e in ({"p": "", "t": "d", "m": 0o755}, {"p": "../escape.txt", "t": "f", "m": 0o644, "c": []},
              {"p": "/etc/evil", "t": "f", "m": 0o644, "c": []}, {"p": "sub", "t": "d", "m": 0o755},
              {"p": "sub/x.txt", "t": "f", "m": 0o644, "c": []}):
        w.add(e)
    item = {"name": "t", "type": "tree", "map": w.finish()}
    target = tmp_path / "target"
    target.mkdir()
    outside = tmp_path / "outside"
    outside.mkdir()
    os.symlink(outside, target / "sub")  # planted by someone before the restore
    sink = LocalSink(str(target))
    rep = restore_tree(lambda c, w: store[c], item, lambda c: store[c], sink, None, "always")
    sink.close()
    assert any("unsafe path" in e for e in rep.errors) and len([e for e in rep.errors if "unsafe" in e]) == 2
    assert not (tmp_path / "escape.txt").exists() and not list(outside.iterdir())


def test_policy_errors_name_file_line_and_field(tmp_path: Path, cli: Cli) -> None:
    cases = {
        "policy: p\nclient: c\nvault: /v\nsources:\n  - name: a\n    plugin: files\n    paths: [/x]\n    colour: red\n":
            (8, "sources.0.colour", "unknown field"),
        "policy: p\nclient: c\nvault: /v\nsources:\n  - name: a\n    plugin: files\n":
            (5, "sources.0.paths", "missing"),
        "policy: p\nclient: c\nvault: /v\nsources:\n  - name: a\n    plugin: nosuch\n": (6, "sources.0.plugin",
                                                                                     "unknown plugin"),
        "policy: p\nclient: c\nvault: /v\nretention: {keep_last: 0}\nsources: []\n": (4, "retention.keep_last",
                                                                                       "greater than"),
        "policy: p\nclient: c\nvault: /v\nsources:\n  - name: a\n    plugin: shares\n    url: smb://h/s\n"
        "    username: u\n    password: hunter2\n": (9, "sources.0.password", "never written inline"),
        "policy: p\nclient: c\nvault: /v\nsources:\n  - name: a\n    plugin: files\n    paths: [/x]\n"
        "  - name: a\n    plugin: files\n    paths: [/y]\n": (8, "sources.1.name", "duplicate"),
        "policy: p\nclient: c\nvault: /v\nsources:\n  - name: a\n\tplugin: files\n": (6, "", "invalid YAML"),
        "policy: p\nclient: c\nvault: /v\nschedule: every night\nsources:\n"
        "  - {name: a, plugin: files, paths: [/x]}\n": (4, "schedule", "cron"),
        "policy: p\nclient: c\nvault: sftp://h/x\nsources:\n  - {name: a, plugin: files, paths: [relative]}\n":
            (3, "vault", "expected sftp://user@host"),
        "policy: p\nclient: c\nvault: gs://b/x\nsources:\n  - {name: a, plugin: files, paths: [/x]}\n":
            (3, "vault", "a path, file://, sftp://"),
        "policy: p\nclient: c\nvault: s3://b:9000/x\nsources:\n  - {name: a, plugin: files, paths: [/x]}\n":
            (3, "vault", "expected s3://BUCKET"),
    }
    for i, (text, (line, field, msg)) in enumerate(cases.items()):
        f = tmp_path / f"p{i}.yaml"
        f.write_text(text)
        p = cli("policy", "check", str(f), passphrase=None, check=False)
        lines = p.stderr.splitlines()  # a file with several problems gets an error line for each
        assert p.returncode == 6 and all(x.startswith(f"dobaas: error: {f}:") for x in lines), p.stderr
        assert_one_line_error(subprocess.CompletedProcess(p.args, p.returncode, p.stdout, lines[0]), 6,
                              f"{f}:{line}:", field, msg)
    good = tmp_path / "good.yaml"
    good.write_text("policy: p\nclient: c\nvault: /v\nsources:\n  - {name: a, plugin: files, paths: [/x]}\n")
    assert "OK" in cli("policy", "check", str(good), passphrase=None).stdout


def test_cli_tour(tmp_path: Path, cli: Cli) -> None:
    """run, snapshots --source, ls (by id and by date), find, restore files, catalog rebuild, audit."""
    src = tmp_path / "src"
    (src / "a" / "b").mkdir(parents=True)
    (src / "a" / "b" / "f.txt").write_text("v1")
    vault = tmp_path / "vault"
    policy = write_policy(tmp_path, vault, [{"name": "docs", "plugin": "files", "paths": [str(src)]}])
    env = Cli({"DOBAAS_CATALOG": str(tmp_path / "cat.db")})
    env("vault", "init", str(vault), "--kdf-cost", "12")
    run1 = json.loads(env("run", str(policy), "--json").stdout)
    assert run1["exit_code"] == 0 and run1["sources"][0]["status"] == "ok"
    (src / "a" / "b" / "f.txt").write_text("v2")
    env("run", str(policy))
    snaps = json.loads(env("snapshots", "--vault", str(vault), "--source", "docs", "--json").stdout)
    assert len(snaps) == 2 and snaps[0]["source"] == "docs" and snaps[0]["client"] == "acme"
    ls = json.loads(env("ls", snaps[0]["id"][:10], str(src / "a" / "b"), "--json").stdout)
    assert [e["name"] for e in ls["entries"]] == ["f.txt"] and ls["entries"][0]["size"] == 2
    # an exact timestamp selects exactly; "HH:MM" would include every snapshot of that minute
    by_date = json.loads(env("ls", "--source", "docs", "--at", snaps[0]["time"], str(src / "a"), "--json").stdout)
    assert by_date["snapshot"] == snaps[0]["id"]
    found = json.loads(env("find", "f.txt", "--json").stdout)
    assert len(found) == 2 and [f["snapshot_count"] for f in found] == [1, 1]
    out = tmp_path / "out"
    env("restore", "files", snaps[0]["id"][:10], str(src / "a" / "b" / "f.txt"), "--vault", str(vault),
        "--target", str(out))
    assert (out / "a" / "b" / "f.txt").read_text() == "v1"
    refused = env("restore", "files", snaps[0]["id"][:10], str(src / "a"), "--vault", str(vault), "--target",
                  str(src / "a"), check=False)
    assert_one_line_error(refused, 2, "--in-place")
    audit = json.loads(env("catalog", "restores", "--json").stdout)
    assert len(audit) == 1 and audit[0]["status"] == "ok"
    pr = json.loads(env("prune", "--vault", str(vault), "--keep-last", "1", "--json").stdout)
    assert pr["removed"] == [snaps[0]["id"]]
    gone = env("ls", snaps[0]["id"][:10], "--json", check=False)
    assert_one_line_error(gone, 5, "no snapshot")  # the catalog forgot it with the vault
    found = json.loads(env("find", "f.txt", "--json").stdout)
    assert [f["snapshot_count"] for f in found] == [1] and found[0]["last_snapshot"] == snaps[1]["id"]
    (tmp_path / "cat.db").unlink()
    rebuilt = json.loads(env("catalog", "rebuild", "--vault", str(vault), "--json").stdout)
    assert rebuilt["snapshots"] == 1
    assert json.loads(env("find", "f.txt", "--json").stdout) == found


def test_listing_cache_round_trips_and_refuses_what_it_did_not_write(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """A stored listing loads back column for column; a file cut short, grown or from another key is ignored."""
    from orchestrator.cbt.listing import Listing
    from orchestrator.cbt.listing_cache import ListingCache

    lst = Listing()
    for k in range(500):
        e = {"p": f"d/f{k}\udcff", "t": "f", "s": k, "n": 2 if k % 7 == 0 else 1, "i": k, "dv": 1}
        lst.append(e, json.dumps(e).encode(), (k, "sig"))
    lst.pieces, lst.piece_ends = ["ab" * 32, "cd" * 32], [300, 500]
    item = {"name": "t", "type": "tree", "map": lst.pieces}
    cache = ListingCache(str(tmp_path / "c"), b"k" * 32)
    cache.store(item, "slot", lst)
    back = cache.load(item, "slot")
    assert back is not None and back.columns() == lst.columns()
    assert ListingCache(str(tmp_path / "c"), b"j" * 32).load(item, "slot") is None  # another key
    (path,) = [tmp_path / "c" / n for n in os.listdir(tmp_path / "c")]
    good = path.read_bytes()
    path.write_bytes(good[:-40] + good[-32:])  # a column cut short (the MAC then fails)
    assert cache.load(item, "slot") is None
    path.write_bytes(good[:-1])
    assert cache.load(item, "slot") is None
    import marshal

    import blake3

    for fmt in (3, 4):  # what earlier versions wrote, authenticated: ignored, not misread
        old_format = marshal.dumps((fmt, *lst.columns()))
        path.write_bytes(old_format + blake3.blake3(old_format, key=cache.key).digest())
        assert cache.load(item, "slot") is None


def test_listing_cache_speeds_up_but_is_never_trusted_blindly(setup, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """With the local listing cache, without it, and with a tampered one, the snapshots list the same entries."""
    src, vault, catalog, policy, _tmp = setup
    from orchestrator.cbt.listing_cache import default_dir
    from orchestrator.vault.tree import iter_tree

    def listing(sid: str) -> list[dict]:
        item = vault.read_snapshot(sid).items[0]
        return list(iter_tree(item, vault.read_chunk))

    first = run_policy(policy, vault, catalog).sources[0]
    cache_files = os.listdir(default_dir())
    assert len(cache_files) == 1
    (src / "docs" / "report.txt").write_text("edited\n")
    with_cache = run_policy(policy, vault, catalog).sources[0]
    assert with_cache.files_read == 1
    # tamper with the cache: claim the edited file is still the old one
    path = os.path.join(default_dir(), os.listdir(default_dir())[0])
    data = bytearray(Path(path).read_bytes())
    data[len(data) // 2] ^= 0xFF
    Path(path).write_bytes(bytes(data))
    (src / "docs" / "report.txt").write_text("edited twice\n")
    tampered = run_policy(policy, vault, catalog).sources[0]
    assert tampered.files_read == 1 and tampered.status == "ok"  # fell back to the vault's listing
    for f in os.listdir(default_dir()):
        os.unlink(os.path.join(default_dir(), f))
    no_cache = run_policy(policy, vault, catalog).sources[0]
    assert no_cache.files_read == 0
    assert listing(no_cache.snapshot) == listing(tampered.snapshot)
    assert len(listing(first.snapshot)) == len(listing(no_cache.snapshot))
    restored = Path(_tmp) / "r"
    restore_files(vault, vault.read_snapshot(tampered.snapshot), [str(src / "docs" / "report.txt")], str(restored),
                  "never", False, None)
    assert (restored / "docs" / "report.txt").read_text() == "edited twice\n"


def test_example_policies_are_valid(cli: Cli) -> None:
    examples = sorted(Path(__file__).resolve().parent.parent.joinpath("policies").glob("*.yaml"))
    assert examples
    for f in examples:
        assert "OK" in cli("policy", "check", "--syntax-only", str(f), passphrase=None).stdout


def test_path_dropped_from_policy_leaves_the_catalog(setup, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    src, vault, catalog, _policy, _tmp = setup
    other = tmp_path / "other"
    other.mkdir()
    (other / "keep.txt").write_text("x")
    two = load_policy(str(write_policy(tmp_path, Path(vault.backend.location), [
        {"name": "documents", "plugin": "files", "paths": [str(src), str(other)], "exclude": ["*.tmp"]}])))
    run_policy(two, vault, catalog)
    one = load_policy(str(write_policy(tmp_path, Path(vault.backend.location), [
        {"name": "documents", "plugin": "files", "paths": [str(src)], "exclude": ["*.tmp"]}])))
    sid = run_policy(one, vault, catalog).sources[0].snapshot
    assert [r["path"] for r in catalog.ls(catalog.snapshot(sid), None)] == [str(src)]
    assert catalog.find("keep.txt")[0]["last_snapshot"] != sid


def test_verify_names_the_damaged_file(setup) -> None:  # type: ignore[no-untyped-def]
    src, vault, catalog, policy, _tmp = setup
    sid = run_policy(policy, vault, catalog).sources[0].snapshot
    from orchestrator.vault.pack import pack_path
    from orchestrator.vault.tree import iter_tree

    item = vault.read_snapshot(sid).items[0]
    entry = next(e for e in iter_tree(item, vault.read_chunk) if e["p"] == "data.bin")
    cid = bytes.fromhex(entry["c"][0][0])
    loc = vault.load_index().get(cid)
    path = f"{vault.backend.location}/{pack_path(loc.pack)}"
    os.chmod(path, 0o644)
    with open(path, "r+b") as f:
        f.seek(loc.offset + 50)
        byte = f.read(1)
        f.seek(loc.offset + 50)
        f.write(bytes([byte[0] ^ 1]))
    rep = verify_vault(Vault.open(LocalBackend(vault.backend.location), PASS))
    hits = [d for d in rep.damage if d.snapshot == sid]
    assert [(d.item, d.path, d.offset) for d in hits] == [(str(src), "data.bin", 0)]


def test_walk_in_a_child_process_reports_what_the_in_process_walk_does(tmp_path: Path) -> None:
    """The child walk's runs and entries, expanded, are exactly the in-process walk's answer, through additions,
    deletions, changes, hard links and excludes; a missing root is an OSError naming it."""
    from orchestrator.plugin.localtree.delta import spawn_walk
    from orchestrator.plugin.localtree.walk import LocalTree

    root = tmp_path / "t"
    for d in range(3):
        (root / f"d{d}").mkdir(parents=True)
        for f in range(20):
            (root / f"d{d}" / f"f{f:02d}.txt").write_text(f"{d}/{f}")
    os.link(root / "d0" / "f00.txt", root / "d1" / "link")
    (root / "skip.tmp").write_text("x")
    tree = LocalTree(str(root), exclude=["*.tmp"])

    def expand(items: list, paths: list[str]) -> list:
        out: list = []
        for k, it in items:
            if type(it) is int:
                out.extend(paths[k:it])
            else:
                assert k == (paths.index(it["p"]) if it["p"] in paths else -1)
                out.append(it)
        return out

    started = spawn_walk(tree, [], [])
    assert started is not None, "no walker process could be started"
    first = list(started)
    assert all(k == -1 for k, _e in first) and [e for _k, e in first] == list(tree.walk())
    paths, sigs = [e["p"] for _k, e in first], [tree.signature(e) for _k, e in first]
    (root / "d0" / "f05.txt").write_text("changed")
    (root / "d1" / "f07.txt").unlink()
    (root / "d2" / "new.txt").write_text("new")
    items = list(spawn_walk(tree, paths, sigs) or [])
    previous = dict(zip(paths, sigs, strict=True)).get
    assert expand(items, paths) == list(tree.walk(previous))
    assert any(type(j) is int and j - k > 10 for k, j in items)  # runs, not one item per unchanged entry
    # unchanged: the root, d0 (d1 and d2 lost or gained a name), 61 names less the changed and the deleted one
    assert sum(j - k for k, j in items if type(j) is int) == 2 + 61 - 2
    with pytest.raises(OSError, match="missing"):
        list(spawn_walk(LocalTree(str(tmp_path / "missing")), [], []) or [])


def test_incremental_listing_reuses_parent_pieces_and_equals_a_fresh_capture(tmp_path: Path) -> None:
    """An incremental writes its listing from its parent's stored pieces where nothing changed, and the result
    lists exactly what a first backup of the same tree lists: with the local cache and without it."""
    from orchestrator.vault.tree import iter_tree

    src = tmp_path / "src"
    for d in range(30):
        (src / f"d{d:02d}").mkdir(parents=True)
        for f in range(100):
            (src / f"d{d:02d}" / f"file-{f:03d}.txt").write_text(f"{d}/{f}")

    def vault_and_policy(name: str):  # type: ignore[no-untyped-def]
        vault_dir = tmp_path / name
        Vault.create(LocalBackend(str(vault_dir)), PASS, kdf_cost=12)
        policy_dir = tmp_path / f"{name}-policy"
        policy_dir.mkdir()
        policy = load_policy(str(write_policy(policy_dir, vault_dir, [
            {"name": "tree", "plugin": "files", "paths": [str(src)]}])))
        return Vault.open(LocalBackend(str(vault_dir)), PASS), policy

    vault, policy = vault_and_policy("vault")
    catalog = Catalog(f"sqlite:///{tmp_path / 'catalog.db'}")

    def item(sid: str) -> dict:
        return vault.read_snapshot(sid).items[0]

    first = item(run_policy(policy, vault, catalog).sources[0].snapshot)
    assert len(first["map"]) > 10
    (src / "d03" / "file-050.txt").write_text("changed")
    (src / "d17" / "file-001.txt").unlink()
    (src / "d29" / "new.txt").write_text("new")
    res = run_policy(policy, vault, catalog).sources[0]
    assert res.files_read == 2
    second = item(res.snapshot)
    assert len(set(second["map"]) & set(first["map"])) >= len(first["map"]) - 6  # only pieces around changes
    from orchestrator.cbt.listing_cache import default_dir

    for f in os.listdir(default_dir()):
        os.unlink(os.path.join(default_dir(), f))
    (src / "d10" / "file-010.txt").write_text("changed too")
    third = item(run_policy(policy, vault, catalog).sources[0].snapshot)  # parent listing from the vault
    assert len(set(third["map"]) & set(second["map"])) >= len(second["map"]) - 4
    fresh_vault, fresh_policy = vault_and_policy("fresh")
    fresh = fresh_vault.read_snapshot(run_policy(fresh_policy, fresh_vault, None).sources[0].snapshot).items[0]

    def entries(it: dict, v: Vault) -> list[dict]:  # chunk ids are keyed per vault: compare the rest
        return [{**e, "c": len(e["c"])} if "c" in e else e for e in iter_tree(it, v.read_chunk)]

    assert entries(third, vault) == entries(fresh, fresh_vault)


def test_run_backs_up_when_the_catalog_cannot_be_opened(tmp_path: Path, cli: Cli) -> None:
    """The catalog runs in a process of its own during `dobaas run`: when it cannot open, the snapshot is still
    written, each catalog step says why it was skipped, and the catalog process does not outlive the run."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.txt").write_text("a")
    policy = write_policy(tmp_path, tmp_path / "vault", [{"name": "docs", "plugin": "files", "paths": [str(src)]}])
    cli("vault", "init", str(tmp_path / "vault"), "--kdf-cost", "12")
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the catalog's directory should be")
    p = cli("run", str(policy), "--catalog", str(blocker / "catalog.db"), "--json", check=False)
    assert p.returncode == 0, p.stderr
    res = json.loads(p.stdout)["sources"][0]
    assert res["status"] == "ok" and res["snapshot"]
    assert any("catalog not updated" in w and "rebuild" in w for w in res["warnings"])
    assert any("alerts not evaluated" in w for w in res["warnings"])
    snaps = cli("snapshots", "--vault", str(tmp_path / "vault"), "--json")
    assert [s["id"] for s in json.loads(snaps.stdout)] == [res["snapshot"]]
    cli("catalog", "rebuild", "--vault", str(tmp_path / "vault"), "--catalog", str(tmp_path / "ok.db"))
    found = json.loads(cli("find", "a.txt", "--catalog", str(tmp_path / "ok.db"), "--json").stdout)
    assert [f["last_snapshot"] for f in found] == [res["snapshot"]]
    left = subprocess.run(["pgrep", "-f", f"run {policy}"], capture_output=True, text=True)
    assert left.stdout.strip() == "", "a process of the run is still alive"


def test_a_killed_walker_process_fails_the_source_and_the_next_run_recovers(setup, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """The walk's child process killed mid-run: the source fails naming the tree and the walk's end, nothing is
    published, and the next run is a normal incremental."""
    from orchestrator.plugin.localtree import delta as walk_process

    src, vault, catalog, policy, _tmp = setup
    first = run_policy(policy, vault, catalog).sources[0]
    (src / "docs" / "report.txt").write_text("edited\n")
    real_init = walk_process._Walk.__init__

    def killed(self, proc, tree):  # type: ignore[no-untyped-def]
        proc.kill()  # as the OOM killer or an operator would
        real_init(self, proc, tree)

    monkeypatch.setattr(walk_process._Walk, "__init__", killed)
    rep = run_policy(policy, vault, catalog)
    res = rep.sources[0]
    assert res.status == "failed" and rep.exit_code == 1 and res.snapshot is None
    assert any(str(src) in e and "walk stopped (killed by signal 9)" in e for e in res.errors), res.errors
    assert [s.id for s in vault.list_snapshots()[0]] == [first.snapshot]
    monkeypatch.setattr(walk_process._Walk, "__init__", real_init)
    again = run_policy(policy, vault, catalog).sources[0]
    assert again.status == "ok" and again.mode == "incremental" and again.files_read == 1


def test_catalog_process_answers_and_a_killed_one_is_an_error_not_a_hang(tmp_path: Path) -> None:
    """`dobaas run`'s catalog process: calls return what the catalog returns and raise what it raises; once the
    process is gone, a call fails at once with a clear error."""
    # in a fresh interpreter: the fork wants a process without threads, which pytest's is not
    code = f"""
import os, signal
from orchestrator.catalog.process import CatalogProcess
from orchestrator.errors import NotFound
cat = CatalogProcess({str(tmp_path / 'c.db')!r})
assert cat.snapshots() == []
try:
    cat.snapshot("abc")
except NotFound as e:
    print("raised:", e)
os.kill(cat.pid, signal.SIGKILL)
os.waitpid(cat.pid, 0)
try:
    cat.snapshots()
except RuntimeError as e:
    print("after kill:", e)
cat.close()
"""
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    assert "raised: no snapshot with id abc in the catalog" in p.stdout
    assert "after kill: the catalog process ended" in p.stdout


def test_names_that_are_not_utf8_are_kept_byte_for_byte(setup) -> None:  # type: ignore[no-untyped-def]
    """A Latin-1 name (an old file server's) is backed up, listed with \\xNN escapes, left unread when unchanged,
    and restored with its original bytes."""
    src, vault, catalog, policy, tmp = setup
    name = b"caf\xe9 r\xe9sum\xe9.txt"
    with open(os.path.join(os.fsencode(src), b"docs", name), "wb") as f:
        f.write(b"latin-1 name")
    first = run_policy(policy, vault, catalog).sources[0]
    assert first.status == "ok", first.errors
    (src / "docs" / "report.txt").write_text("edited\n")
    second = run_policy(policy, vault, catalog).sources[0]
    assert second.status == "ok" and second.files_read == 1
    found = catalog.find("caf*")
    assert [f["path"] for f in found] == [f"{src}/docs/caf\\xe9 r\\xe9sum\\xe9.txt"]
    assert found[0]["snapshot_count"] == 2
    restored = tmp / "restored"
    restore_files(vault, vault.read_snapshot(second.snapshot), [str(src / "docs")], str(restored), "never", False,
                  None)
    assert (os.path.join(os.fsencode(restored), b"docs", name) in
            [os.path.join(os.fsencode(restored), b"docs", n) for n in os.listdir(os.fsencode(restored / "docs"))])
    with open(os.path.join(os.fsencode(restored), b"docs", name), "rb") as f:
        assert f.read() == b"latin-1 name"
