"""The chunk index of a large vault, kept on local disk instead of in memory.

In memory, the index costs about 190 bytes per chunk: 9.5 GB for a vault of 50 million chunks (3 TB at 64 KiB).
Above a threshold, the index objects are merged once into a local table sorted by chunk id (50 bytes a record:
id, pack number, kind, compression, offset, length, raw length) next to the listing cache. Only a fence stays
in memory (the first 8 id bytes of every block of 64 records: 8 bytes per 64 chunks) with the pack names; a
lookup reads two blocks (6.4 KB) with one ``pread``. What a backup adds lives in an in-memory overlay.

The table is a cache: it names the index objects it was built from. When the vault gains index objects, only
the new ones are read (into the overlay); when some disappear (garbage collection consolidated them), the table
is built again. Building streams the objects through 256 bucket files (ids are uniform keyed hashes), then sorts
each bucket in memory: memory stays flat whatever the vault's size. A table that does not match is rebuilt,
never trusted: a wrong entry could only point a read at bytes whose authentication then fails.
"""

from __future__ import annotations

import array
import bisect
import fcntl
import json
import logging
import os
import shutil
import struct
import tempfile
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from functools import cache
from typing import Any

from orchestrator.cachedir import cache_root
from orchestrator.vault.pack import ENTRY

log = logging.getLogger(__name__)

FORMAT = 1
BLOCK = 64  # records per fence entry
#: a record of the table: the id (its four big-endian words sort as its bytes), pack number, kind, compression,
#: offset, length, raw length
RECORD = struct.Struct("<32sIBBIII")
REC = RECORD.size
assert REC == 50


@cache
def dtypes() -> tuple[Any, Any]:
    """numpy dtypes of a pack's entry table (pack.ENTRY) and of a table record (RECORD), the id split in
    big-endian words. numpy is imported only when a table is built (it costs every command 80 ms to load)."""
    import numpy as np

    words = [("k0", ">u8"), ("k1", ">u8"), ("k2", ">u8"), ("k3", ">u8")]
    entry = np.dtype([*words, ("kind", "u1"), ("comp", "u1"), ("offset", "<u4"), ("length", "<u4"), ("raw", "<u4")])
    rec = np.dtype([*words, ("pack", "<u4"), ("kind", "u1"), ("comp", "u1"), ("offset", "<u4"), ("length", "<u4"),
                    ("raw", "<u4")])
    assert entry.itemsize == ENTRY.size and rec.itemsize == REC
    return entry, rec


def table_dir(vault_id: str) -> str:
    return os.path.join(cache_root(), "index", vault_id)


@contextmanager
def table_lock(directory: str) -> Iterator[None]:
    """An exclusive lock (flock) on a vault's table: backups in several processes never build it at once."""
    os.makedirs(os.path.dirname(directory), mode=0o700, exist_ok=True)
    fd = os.open(directory + ".lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def memory_limit() -> int:
    """Chunks above which a vault's index goes to disk (DOBAAS_INDEX_MEMORY_CHUNKS; 2 million ≈ 380 MB)."""
    return int(os.environ.get("DOBAAS_INDEX_MEMORY_CHUNKS", 2_000_000))


class DiskTable:
    """The sorted table and its fence, opened read-only."""

    def __init__(self, directory: str) -> None:
        with open(os.path.join(directory, "meta.json"), encoding="utf-8") as f:
            meta = json.load(f)
        if meta.get("format") != FORMAT:
            raise ValueError("index cache of another format")
        self.objects: set[str] = set(meta["objects"])
        self.packs: list[str] = meta["packs"]
        self.records: int = meta["records"]
        self.unique: int = meta["unique"]
        self.fence = array.array("Q")
        with open(os.path.join(directory, "fence.bin"), "rb") as f:
            self.fence.frombytes(f.read())
        self.fd = os.open(os.path.join(directory, "table.bin"), os.O_RDONLY)
        if os.fstat(self.fd).st_size != self.records * REC:
            os.close(self.fd)
            raise ValueError("index cache table has the wrong size")

    def close(self) -> None:
        os.close(self.fd)

    def find(self, cid: bytes) -> list[int]:
        """Record numbers holding ``cid`` (several when packs hold copies), in the order they were listed."""
        k = int.from_bytes(cid[:8], "big")
        b = max(bisect.bisect_left(self.fence, k) - 1, 0)
        out: list[int] = []
        while b * BLOCK < self.records:
            start = b * BLOCK
            buf = os.pread(self.fd, 2 * BLOCK * REC, start * REC)
            pos = buf.find(cid)
            while pos >= 0:
                if pos % REC == 0:
                    out.append(start + pos // REC)
                pos = buf.find(cid, pos + 1)
            # the run of this id may go on past the window (many copies): look further only then
            last = int.from_bytes(buf[-REC:][:8], "big") if len(buf) >= REC else k + 1
            if last > k or start + 2 * BLOCK >= self.records:
                return sorted(set(out))
            b += 1
        return out

    def record(self, number: int) -> tuple[bytes, int, int, int, int, int, int]:
        """(id, pack number, kind, comp, offset, length, raw length) of record ``number``."""
        return RECORD.unpack(os.pread(self.fd, REC, number * REC))

    def scan(self, batch: int = 1 << 16) -> Iterator[bytes]:
        """The table's records in order, ``batch`` at a time (raw bytes, REC each)."""
        for start in range(0, self.records, batch):
            yield os.pread(self.fd, min(batch, self.records - start) * REC, start * REC)


def build_table(directory: str,
                objects: Iterable[tuple[str, Callable[[], list[tuple[str, memoryview]] | None]]]) -> None:
    """Merge index objects into a sorted table at ``directory`` (replaced atomically). ``objects`` yields
    (name, read) where read() returns the object's (pack, entry table) pairs, or None to leave it out."""
    import numpy as np

    ENTRY_DT, REC_DT = dtypes()
    parent = os.path.dirname(directory)
    os.makedirs(parent, mode=0o700, exist_ok=True)
    work = tempfile.mkdtemp(prefix=".build-", dir=parent)
    try:
        buckets = [open(os.path.join(work, f"b{i:02x}"), "wb") for i in range(256)]  # noqa: SIM115
        packs: list[str] = []
        numbers: dict[str, int] = {}
        names: list[str] = []
        try:
            for name, read in objects:
                tables = read()
                if tables is None:  # does not decode: left out (the caller records why)
                    continue
                parts = []
                for pack, table in tables:
                    entries = np.frombuffer(table, ENTRY_DT)
                    rec = np.empty(len(entries), REC_DT)
                    for column in ENTRY_DT.names or ():
                        rec[column] = entries[column]
                    number = numbers.get(pack)
                    if number is None:
                        number = numbers[pack] = len(packs)
                        packs.append(pack)
                    rec["pack"] = number
                    parts.append(rec)
                names.append(name)
                if not parts:
                    continue
                recs = np.concatenate(parts).astype(REC_DT, copy=False)  # (concatenate makes fields native-endian)
                top = (recs["k0"] >> np.uint64(56)).astype(np.int64)
                order = np.argsort(top, kind="stable")
                recs, top = recs[order], top[order]
                edges = np.searchsorted(top, np.arange(257), side="left")
                for b in range(256):
                    if edges[b] < edges[b + 1]:
                        buckets[b].write(recs[edges[b]:edges[b + 1]].tobytes())
        finally:
            for f in buckets:
                f.close()
        records = unique = 0
        fence_parts = []
        with open(os.path.join(work, "table.bin"), "wb") as out:
            for b in range(256):
                path = os.path.join(work, f"b{b:02x}")
                with open(path, "rb") as bucket:
                    recs = np.frombuffer(bucket.read(), REC_DT)
                os.unlink(path)
                if not len(recs):
                    continue
                recs = recs[np.argsort(recs["k0"], kind="stable")]
                first = (-records) % BLOCK
                fence_parts.append(np.ascontiguousarray(recs["k0"][first::BLOCK]).astype("<u8"))
                same = np.ones(len(recs), bool)
                for k in ("k0", "k1", "k2", "k3"):
                    same[1:] &= recs[k][1:] == recs[k][:-1]
                same[0] = False
                unique += int(len(recs) - same.sum())
                out.write(recs.tobytes())
                records += len(recs)
            out.flush()
            os.fsync(out.fileno())
        fence = np.concatenate(fence_parts) if fence_parts else np.empty(0, "<u8")
        with open(os.path.join(work, "fence.bin"), "wb") as fence_file:
            fence_file.write(fence.tobytes())
        with open(os.path.join(work, "meta.json"), "w", encoding="utf-8") as meta_file:
            json.dump({"format": FORMAT, "objects": sorted(names), "packs": packs, "records": records,
                       "unique": unique}, meta_file)
        old = tempfile.mkdtemp(prefix=".old-", dir=parent)
        if os.path.exists(directory):
            os.rename(directory, os.path.join(old, "table"))  # open tables keep reading their own files
        os.rename(work, directory)
        shutil.rmtree(old, ignore_errors=True)
        log.info("index cache built at %s: %d record(s), %d chunk(s), %d pack(s), %d object(s)", directory, records,
                 unique, len(packs), len(names))
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise


def open_table(directory: str) -> DiskTable | None:
    try:
        return DiskTable(directory)
    except (OSError, ValueError, KeyError) as e:
        if os.path.exists(directory):
            log.info("index cache at %s not usable (%s): built again", directory, e)
        return None
