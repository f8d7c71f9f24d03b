"""File reads in reader processes (first backups, captures with many files to read): the same snapshot as reads
in threads, exact deduplication across readers and with the vault, and a reader that dies fails its source
cleanly (nothing published, the vault verifies, the next run completes)."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from orchestrator.backup.runner import run_policy
from orchestrator.catalog.db import Catalog
from orchestrator.cbt import read_procs, tree
from orchestrator.policy.model import load_policy
from orchestrator.restore.files import restore_files
from orchestrator.vault.backend.local import LocalBackend
from orchestrator.vault.repository import Vault
from orchestrator.vault.verify import verify_vault
from tests.conftest import PASS
from tests.filetrees import rich_tree, snapshot_of, write_policy

pytestmark = pytest.mark.files


def _tree(root: Path) -> None:
    """rich_tree, many small files whose contents repeat across directories (so across batches and readers),
    and a file larger than a whole read, streamed, with a question asked in its middle."""
    rich_tree(root)
    for d in range(6):
        (root / f"dir{d}").mkdir()
        for k in range(120):
            body = (f"file {k % 40} line\n" * (50 + k % 40)).encode()  # 40 distinct contents, each 18 times
            (root / f"dir{d}" / f"f{k:03}.txt").write_bytes(body)
    with open(root / "large.bin", "wb") as f:
        for _ in range(20):
            f.write(os.urandom(512 * 1024) + bytes(512 * 1024))


def _vault(tmp: Path, name: str, src: Path) -> tuple[Vault, Catalog, object]:
    vault_dir = tmp / name
    Vault.create(LocalBackend(str(vault_dir)), PASS, kdf_cost=12)
    (tmp / name).with_suffix(".d").mkdir()
    policy = load_policy(str(write_policy((tmp / name).with_suffix(".d"), vault_dir, [
        {"name": "documents", "plugin": "files", "paths": [str(src)]}])))
    return (Vault.open(LocalBackend(str(vault_dir)), PASS), Catalog(f"sqlite:///{tmp / name}.db"), policy)


def test_reads_in_processes_make_the_snapshot_threads_make(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                          caplog: pytest.LogCaptureFixture) -> None:
    src = tmp_path / "src"
    src.mkdir()
    _tree(src)
    threads = _vault(tmp_path, "threads", src)
    t = run_policy(threads[2], threads[0], threads[1]).sources[0]  # type: ignore[arg-type]
    assert t.status == "ok" and not t.errors, t
    monkeypatch.setattr(tree, "PROCESSES_AFTER_FILES", 0)
    caplog.set_level("INFO", logger="orchestrator.cbt.read_procs")
    vault, catalog, policy = _vault(tmp_path, "procs", src)
    p = run_policy(policy, vault, catalog).sources[0]  # type: ignore[arg-type]
    assert p.status == "ok" and not p.errors, p
    assert "files read by 2 reader processes" in caplog.text
    assert (p.files, p.files_read, p.bytes_read) == (t.files, t.files_read, t.bytes_read)
    # exact deduplication: the repeated contents are stored once, as the threads store them
    assert p.bytes_new == t.bytes_new
    assert len(vault.load_index().chunks) == len(threads[0].load_index().chunks)
    out = tmp_path / "restored"
    r = restore_files(vault, vault.read_snapshot(p.snapshot), [str(src)], str(out), "never", False, catalog)
    assert r.status == "ok" and not r.errors, r
    assert snapshot_of(out) == snapshot_of(src)
    assert verify_vault(vault).ok
    # the incremental after a change reads through the processes too
    (src / "dir3" / "f007.txt").write_bytes(b"changed")
    again = run_policy(policy, vault, catalog).sources[0]  # type: ignore[arg-type]
    assert again.status == "ok" and again.mode == "incremental" and again.files_read == 1
    assert again.bytes_read == len(b"changed")


def test_the_readers_chunks_fill_one_pack_at_a_time(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Readers send runs of sealed chunks that go into one pack of the backup process, not packs of their own
    (each held an 18 MiB buffer, and ended with a partly filled pack of its own). Every data pack but the last
    is full, and the snapshot restores exactly."""
    from collections import defaultdict

    from orchestrator.vault.pack import KIND_DATA

    src = tmp_path / "src"
    src.mkdir()
    _tree(src)
    pack_size = 1024 * 1024
    vault_dir = tmp_path / "vault"
    Vault.create(LocalBackend(str(vault_dir)), PASS, kdf_cost=12, pack_size=pack_size)
    (tmp_path / "policy").mkdir()
    policy = load_policy(str(write_policy(tmp_path / "policy", vault_dir, [
        {"name": "documents", "plugin": "files", "paths": [str(src)]}])))
    vault, catalog = Vault.open(LocalBackend(str(vault_dir)), PASS), Catalog(f"sqlite:///{tmp_path}/c.db")
    monkeypatch.setattr(tree, "PROCESSES_AFTER_FILES", 0)
    res = run_policy(policy, vault, catalog).sources[0]  # type: ignore[arg-type]
    assert res.status == "ok" and not res.errors, res
    index = vault.load_index()
    filled: dict[str, int] = defaultdict(int)
    for cid in index.chunks:
        loc = index.chunks[cid]
        if loc.kind == KIND_DATA:
            filled[loc.pack] += loc.length
    assert len(filled) >= 8, f"{len(filled)} data packs for about 10 MiB"
    partial = [n for n in filled.values() if n < pack_size]
    assert len(partial) <= 1, f"{len(partial)} data packs not full: {sorted(filled.values())}"
    out = tmp_path / "restored"
    r = restore_files(vault, vault.read_snapshot(res.snapshot), [str(src)], str(out), "never", False, catalog)
    assert r.status == "ok" and snapshot_of(out) == snapshot_of(src)
    assert verify_vault(vault).ok


def test_a_killed_reader_process_fails_the_source_and_the_next_run_completes(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src = tmp_path / "src"
    src.mkdir()
    _tree(src)
    vault, catalog, policy = _vault(tmp_path, "vault", src)
    monkeypatch.setattr(tree, "PROCESSES_AFTER_FILES", 0)
    monkeypatch.setattr(tree, "READ_BATCH_FILES", 8)
    real_submit = read_procs.ReaderProcesses.submit
    sent = []

    def submit_then_kill(self, entries, future):  # type: ignore[no-untyped-def]
        real_submit(self, entries, future)
        sent.append(1)
        if len(sent) == 12:  # mid-capture, as the OOM killer or an operator would
            os.kill(self.links[0].proc.pid, signal.SIGKILL)

    monkeypatch.setattr(read_procs.ReaderProcesses, "submit", submit_then_kill)
    rep = run_policy(policy, vault, catalog)  # type: ignore[arg-type]
    res = rep.sources[0]
    assert res.status == "failed" and rep.exit_code == 1 and res.snapshot is None
    assert any("file reader process 0 stopped (killed by signal 9)" in e for e in res.errors), res.errors
    assert vault.list_snapshots()[0] == []
    assert verify_vault(vault).ok  # what was uploaded before the kill is indexed and sound
    monkeypatch.setattr(read_procs.ReaderProcesses, "submit", real_submit)
    again = run_policy(policy, vault, catalog).sources[0]  # type: ignore[arg-type]
    assert again.status == "ok" and not again.errors, again
    out = tmp_path / "restored"
    r = restore_files(vault, vault.read_snapshot(again.snapshot), [str(src)], str(out), "never", False, catalog)
    assert r.status == "ok" and snapshot_of(out) == snapshot_of(src)


def test_a_reader_that_dies_holding_its_last_pack_fails_the_source(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """Every file read, every result in, but one reader killed before it sent the pack holding its last chunks:
    the snapshot would name chunks that were never stored, so the source fails and nothing is published; the
    next run stores them."""
    src = tmp_path / "src"
    src.mkdir()
    _tree(src)
    vault, catalog, policy = _vault(tmp_path, "vault", src)
    monkeypatch.setattr(tree, "PROCESSES_AFTER_FILES", 0)
    real_close = read_procs.ReaderProcesses.close

    def kill_then_close(self):  # type: ignore[no-untyped-def]
        proc = self.links[0].proc
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        real_close(self)

    monkeypatch.setattr(read_procs.ReaderProcesses, "close", kill_then_close)
    res = run_policy(policy, vault, catalog).sources[0]  # type: ignore[arg-type]
    assert res.status == "failed" and res.snapshot is None, res
    assert any("file reader process 0 stopped (killed by signal 9)" in e for e in res.errors), res.errors
    assert vault.list_snapshots()[0] == [] and verify_vault(vault).ok
    monkeypatch.setattr(read_procs.ReaderProcesses, "close", real_close)
    again = run_policy(policy, vault, catalog).sources[0]  # type: ignore[arg-type]
    assert again.status == "ok" and verify_vault(vault).ok
    out = tmp_path / "restored"
    r = restore_files(vault, vault.read_snapshot(again.snapshot), [str(src)], str(out), "never", False, catalog)
    assert r.status == "ok" and snapshot_of(out) == snapshot_of(src)
