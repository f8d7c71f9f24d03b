"""Content-defined chunking of byte streams: boundaries follow content, streams round-trip, dumps dedup."""

from __future__ import annotations

import io
import os
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from orchestrator.backup.session import BackupSession
from orchestrator.cbt.chunker import Chunker
from orchestrator.cbt.stream import capture_stream
from orchestrator.restore.stream import restore_stream
from orchestrator.vault.repository import Vault
from orchestrator.vault.verify import verify_vault
from tests.conftest import mixed_bytes, reopen

pytestmark = pytest.mark.cbt
SMALL = Chunker(1024, 4096, 16384)


def _cuts(chunker: Chunker, data: bytes) -> list[bytes]:
    return [bytes(c) for c in chunker.cut_stream(io.BytesIO(data))]


@settings(max_examples=60, deadline=None)
@given(st.binary(max_size=100_000), st.integers(0, 2**16))
def test_chunks_cover_the_stream_within_bounds(data: bytes, seed: int) -> None:
    data = data + random.Random(seed).randbytes(seed % 50_000)
    chunks = _cuts(SMALL, data)
    assert b"".join(chunks) == data
    assert all(len(c) <= SMALL.max_size for c in chunks)
    assert all(len(c) >= SMALL.min_size for c in chunks[:-1])
    assert [bytes(c) for c in SMALL.cut_buf(data)] == chunks  # buffer and stream cut identically


def test_insertion_changes_only_nearby_chunks() -> None:
    base = random.Random(1).randbytes(400_000)
    edited = base[:200_000] + b"one inserted line\n" + base[200_000:]
    a, b = set(_cuts(SMALL, base)), set(_cuts(SMALL, edited))
    assert len(a - b) <= 3  # fixed-size blocks would lose every block after the insertion
    assert len(a & b) >= len(a) - 3


def _backup_stream(vault: Vault, name: str, data: bytes) -> tuple[str, dict]:
    with BackupSession(vault, name, lock_wait=0) as s:
        cap = capture_stream(s.writer, io.BytesIO(data), "dump.sql", SMALL)
        snap = s.commit([cap.item])
        return snap.id, {"new": s.writer.stats.chunks_new, "reused": s.writer.stats.chunks_reused}


def test_stream_roundtrip_and_day_to_day_dedup(vault: Vault) -> None:
    day1 = mixed_bytes(300_000, 11)
    day2 = day1[:100_000] + b"INSERT INTO t VALUES (42);\n" * 3 + day1[100_000:250_000] + day1[260_000:]
    sid1, _ = _backup_stream(vault, "db", day1)
    sid2, st2 = _backup_stream(vault, "db", day2)
    assert st2["reused"] > 3 * st2["new"]  # the second dump mostly deduplicates against the first
    for sid, data in ((sid1, day1), (sid2, day2)):
        out = io.BytesIO()
        v = reopen(vault)
        assert restore_stream(v, v.read_snapshot(sid).items[0], out) == len(data)
        assert out.getvalue() == data
    assert verify_vault(reopen(vault)).ok


def test_empty_and_tiny_streams(vault: Vault) -> None:
    for data in (b"", b"x", os.urandom(10)):
        sid, _ = _backup_stream(vault, f"s{len(data)}", data)
        out = io.BytesIO()
        restore_stream(vault, vault.read_snapshot(sid).items[0], out)
        assert out.getvalue() == data


def test_threads_that_come_and_go_share_a_few_pack_buffers(vault: Vault, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each capture of a policy's paths starts reader and listing threads of its own: a pack buffer (18 MiB) held
    per thread until the commit made a 10-path policy's backup process peak at 979 MiB instead of 380. Buffers
    are pooled: as many as threads store at the same moment, and every chunk of every thread is stored."""
    import threading

    from orchestrator.vault import pack

    made = []
    real_init = pack.PackBuilder.__init__

    def counting_init(self, *a, **k):  # type: ignore[no-untyped-def]
        made.append(self)
        real_init(self, *a, **k)

    monkeypatch.setattr(pack.PackBuilder, "__init__", counting_init)
    blobs = [random.Random(n).randbytes(2_000) for n in range(60)]  # 120 KB: two packs of 64 KiB
    with BackupSession(vault, "many-threads", lock_wait=0) as s:
        ids = []
        for k in range(20):  # one thread after the other, like the captures of 20 paths
            t = threading.Thread(target=lambda k=k: ids.extend(s.writer.store(b) for b in blobs[3 * k: 3 * k + 3]))
            t.start()
            t.join()
        s.writer.flush()
        assert len(made) <= 2, f"{len(made)} pack buffers for threads that never stored at the same moment"
        assert s.writer.stats.chunks_new == 60
        s.commit([])
    v = reopen(vault)
    assert [v.read_chunk(i, "test") for i in ids] == blobs
    assert verify_vault(v).ok


def test_a_stored_packs_buffer_is_given_back(vault: Vault, monkeypatch: pytest.MonkeyPatch) -> None:
    """Once a pack is stored its buffer (18 MiB at the default size) is freed: emptied builders kept for reuse,
    or held by a thread as the one it used last, made a first backup of 100,000 files peak 40 MiB higher."""
    import threading
    import weakref

    from orchestrator.vault import pack

    made: list[weakref.ref] = []
    real_init = pack.PackBuilder.__init__

    def tracked_init(self, *a, **k):  # type: ignore[no-untyped-def]
        made.append(weakref.ref(self))
        real_init(self, *a, **k)

    monkeypatch.setattr(pack.PackBuilder, "__init__", tracked_init)
    blobs = [random.Random(n).randbytes(20_000) for n in range(40)]  # 800 KB: packs of 64 KiB
    with BackupSession(vault, "freed", lock_wait=0) as s:
        workers = [threading.Thread(target=lambda k=k: [s.writer.store(b) for b in blobs[k::2]]) for k in (0, 1)]
        for t in workers:
            t.start()
        s.writer.store(b"still open")  # this thread keeps one partly filled pack open
        for t in workers:
            t.join()
        s.writer.flush()
        assert len(made) >= 10
        assert [r for r in made if r() is not None] == [], "pack buffers held after every pack was stored"
        s.commit([])
    assert verify_vault(reopen(vault)).ok


def test_a_backup_finds_its_parent_without_reading_every_manifest(vault: Vault,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """Each snapshot's name and time are kept locally once read: the next backup lists the vault and reads one
    manifest, not all of them; a damaged, removed or tampered-with record never gives a wrong parent."""
    import glob

    from orchestrator.vault.backend.local import LocalBackend

    def newest_by_reading_all(v: Vault, name: str) -> str | None:
        named = [s.id for s in v.list_snapshots()[0] if s.name == name]
        return named[-1] if named else None

    ids = {}
    for k in range(12):
        name = f"acme/src{k % 3}"
        with BackupSession(vault, name, lock_wait=0) as s:
            ids.setdefault(name, []).append(s.commit([]).id)
    reads: list[str] = []
    real_get = LocalBackend.get

    def counting_get(self: LocalBackend, name: str) -> bytes:
        if name.startswith("snapshots/"):
            reads.append(name)
        return real_get(self, name)

    monkeypatch.setattr(LocalBackend, "get", counting_get)
    v = reopen(vault)
    reads.clear()
    assert v.latest("acme/other") is None
    assert len(reads) == 1  # the last snapshot made: written after its backup looked for its parent
    for name in ids:
        assert newest_by_reading_all(v, name) == ids[name][-1]
        reads.clear()
        got = v.latest(name)
        assert got is not None and got.id == ids[name][-1]
        assert reads == [f"snapshots/{got.id}"]  # one manifest read, the parent itself

    # the newest manifest of src0 damaged in the vault: the one before it is the parent, as before
    path = os.path.join(vault.backend.location, "snapshots", ids["acme/src0"][-1])
    with open(path, "r+b") as f:
        f.seek(40)
        f.write(b"\xff\xff")
    got = reopen(vault).latest("acme/src0")
    assert got is not None and got.id == ids["acme/src0"][-2] == newest_by_reading_all(reopen(vault), "acme/src0")
    os.unlink(os.path.join(vault.backend.location, "snapshots", ids["acme/src1"][-1]))  # removed (pruned)
    got = reopen(vault).latest("acme/src1")
    assert got is not None and got.id == ids["acme/src1"][-2]

    # the local record tampered with (src2 made to look newest under src0's name): ignored, everything re-read
    (cache_file,) = glob.glob(os.path.join(os.environ["DOBAAS_CACHE_DIR"], "snapshots", "*.json"))
    with open(cache_file, "rb") as f:
        data = f.read().replace(b'"acme/src2"', b'"acme/src0"')
    with open(cache_file, "wb") as f:
        f.write(data)
    reads.clear()
    got = reopen(vault).latest("acme/src0")
    assert got is not None and got.id == ids["acme/src0"][-2]
    assert len(reads) >= 10  # every manifest read again


def test_a_thread_keeps_filling_the_pack_it_filled_last(vault: Vault, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two threads storing side by side each keep their chunks together in one pack (a file's chunks restore
    from one pack), although pack buffers are shared: a thread takes the builder it used last when it is free."""
    import threading

    from orchestrator.vault import pack

    real_add = pack.PackBuilder.add
    first_adds = threading.Barrier(2)  # both threads inside their first add at once: two builders exist
    seen: set[str] = set()

    def add(self, *a, **k):  # type: ignore[no-untyped-def]
        name = threading.current_thread().name
        if name not in seen:
            seen.add(name)
            first_adds.wait(timeout=10)
        return real_add(self, *a, **k)

    monkeypatch.setattr(pack.PackBuilder, "add", add)
    turns = {"A": threading.Event(), "B": threading.Event()}
    ids: dict[str, list[bytes]] = {"A": [], "B": []}
    with BackupSession(vault, "side-by-side", lock_wait=0) as s:
        def storer(me: str, other: str) -> None:
            ids[me].append(s.writer.store(random.Random(me).randbytes(1500)))  # concurrent first stores
            for k in range(8):  # then strictly alternating: A, B, A, B, …
                turns[me].wait(timeout=10)
                turns[me].clear()
                ids[me].append(s.writer.store(random.Random(f"{me}{k}").randbytes(1500)))
                turns[other].set()

        threads = [threading.Thread(target=storer, args=p, name=p[0]) for p in (("A", "B"), ("B", "A"))]
        for t in threads:
            t.start()
        turns["A"].set()
        for t in threads:
            t.join()
        s.writer.flush()
        index = s.writer.index
        packs = {me: {index.chunks[cid].pack for cid in chunk_ids} for me, chunk_ids in ids.items()}
        s.commit([])
    assert len(packs["A"]) == len(packs["B"]) == 1 and packs["A"] != packs["B"], packs
