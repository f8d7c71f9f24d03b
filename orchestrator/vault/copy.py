"""Copy snapshots to a second vault (3-2-1: another site, another provider) without reading the sources again.

Each vault has its own keys, so chunk ids differ between them (they are keyed hashes): every chunk a snapshot
references is read from the source vault, its id under the destination's key computed, and stored there only
when the destination lacks it. Maps and listing pieces are rewritten with the new ids (same boundaries, so an
unchanged piece deduplicates against the previous copy). An id map (old id → new id, in a local SQLite file)
lets the next copy skip reading what the destination already holds: only what changed is read and sent.

A copied snapshot keeps its name, time, host, meta and stats, with ``meta.copied_from`` = {vault, snapshot};
copying it again is a no-op. The copy is published like a backup: packs, index, then the manifest, under a
shared lock on the destination, so a killed copy leaves nothing visible and the next one reuses what it sent.
"""

from __future__ import annotations

import logging
import os
import sqlite3
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from orchestrator.errors import IntegrityError
from orchestrator.vault.crypto import ID_LEN, ZERO_ID
from orchestrator.vault.records import Item, Refs, TreeEntry
from orchestrator.vault.repository import Vault
from orchestrator.vault.snapshot import STREAM_ENTRY, Snapshot
from orchestrator.vault.tree import encode_entry, iter_tree_pieces
from orchestrator.vault.writer import BackupWriter

log = logging.getLogger(__name__)

BATCH = 256  # chunks read from the source at once (in parallel: remote sources answer one range per request)
READERS = 8


class IdMap:
    """Source chunk id → destination chunk id, for one (source, destination) pair of vaults. A cache: losing it
    costs a full read of the source at the next copy, never data."""

    def __init__(self, path: str | None) -> None:
        self._mem: dict[bytes, bytes] = {}
        self._db: sqlite3.Connection | None = None
        if path:
            os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
            self._db = sqlite3.connect(path)
            self._db.execute("CREATE TABLE IF NOT EXISTS ids (src BLOB PRIMARY KEY, dst BLOB NOT NULL)")

    def get(self, old: bytes) -> bytes | None:
        new = self._mem.get(old)
        if new is None and self._db is not None:
            row = self._db.execute("SELECT dst FROM ids WHERE src = ?", (old,)).fetchone()
            new = row[0] if row else None
        return new

    def put(self, old: bytes, new: bytes) -> None:
        self._mem[old] = new
        if self._db is not None:
            self._db.execute("INSERT OR REPLACE INTO ids VALUES (?, ?)", (old, new))

    def commit(self) -> None:
        if self._db is not None:
            self._db.commit()

    def close(self) -> None:
        if self._db is not None:
            self._db.commit()
            self._db.close()


@dataclass
class CopyReport:
    copied: list[dict] = field(default_factory=list)  # {"source": id, "copy": id, "name": …}
    already: list[str] = field(default_factory=list)  # source snapshot ids the destination already holds
    chunks_read: int = 0  # read from the source (not known to be in the destination)
    chunks_sent: int = 0  # new in the destination
    bytes_sent: int = 0  # bytes of objects written to the destination

    def to_json(self) -> dict:
        return {"copied": self.copied, "already": self.already, "chunks_read": self.chunks_read,
                "chunks_sent": self.chunks_sent, "bytes_sent": self.bytes_sent}


def copies_in(dst: Vault, src_id: str) -> dict[str, str]:
    """Source snapshot id → its copy's id, for what ``dst`` already holds from the vault ``src_id``."""
    out = {}
    for s in dst.list_snapshots()[0]:
        origin = s.meta.get("copied_from") or {}
        if origin.get("vault") == src_id and origin.get("snapshot"):
            out[origin["snapshot"]] = s.id
    return out


def plan_copy(src: Vault, dst: Vault, snaps: Iterable[Snapshot]) -> tuple[list[Snapshot], list[str], dict[str, str]]:
    """(to copy, oldest first; ids already copied; source id → copy id of what ``dst`` holds from ``src``)."""
    if src.config.id == dst.config.id:
        raise IntegrityError("the source and the destination are the same vault")
    done = copies_in(dst, src.config.id)
    snaps = sorted(snaps, key=lambda s: (s.time, s.id))
    return [s for s in snaps if s.id not in done], [s.id for s in snaps if s.id in done], done


def copy_snapshots(src: Vault, dst: Vault, snaps: Iterable[Snapshot], id_map: IdMap,
                   progress: Callable[[int], None] | None = None, lock_wait: float = 0.0) -> CopyReport:
    """Copy ``snaps`` (oldest first) from ``src`` to ``dst``; those already copied are skipped."""
    rep = CopyReport()
    todo, rep.already, done = plan_copy(src, dst, snaps)
    if not todo:
        return rep
    with src.lock("shared", "copy to another vault", lock_wait):  # no space reclaim under our feet
        for snap in todo:
            _copy_one(src, dst, snap, id_map, rep, done, progress, lock_wait)
    return rep


def _copy_one(src: Vault, dst: Vault, snap: Snapshot, id_map: IdMap, rep: CopyReport, done: dict[str, str],
              progress: Callable[[int], None] | None, lock_wait: float) -> None:
    with dst.lock("shared", f"copy of {snap.name}", lock_wait) as lock:
        dst.forget_index()
        writer = BackupWriter(dst, lock, load_index=dst.load_index_adopting)  # a killed copy's packs reused
        try:
            with ThreadPoolExecutor(READERS, thread_name_prefix="copy-read") as pool:
                rewrite = _SnapshotCopy(src, writer, id_map, rep, progress, pool)
                items = [rewrite.item(i) for i in snap.items]
            copy = Snapshot(name=snap.name, items=items, time=snap.time, hostname=snap.hostname,
                            parent=done.get(snap.parent or ""), stats=dict(snap.stats),
                            meta={**snap.meta, "copied_from": {"vault": src.config.id, "snapshot": snap.id}})
            writer.commit(copy)
        except BaseException:
            writer.abort()
            raise
        finally:
            id_map.commit()
    rep.chunks_sent += writer.stats.chunks_new
    rep.bytes_sent += writer.stats.bytes_written
    done[snap.id] = copy.id
    rep.copied.append({"source": snap.id, "copy": copy.id, "name": snap.name, "time": snap.time})
    log.info("copied snapshot %s (%s, %s) as %s", snap.id[:12], snap.name, snap.time, copy.id[:12])


class _SnapshotCopy:
    """Rewrites one snapshot's items for the destination, storing the chunks it lacks."""

    def __init__(self, src: Vault, writer: BackupWriter, id_map: IdMap, rep: CopyReport,
                 progress: Callable[[int], None] | None, pool: ThreadPoolExecutor) -> None:
        self.src, self.writer, self.id_map, self.rep, self.progress = src, writer, id_map, rep, progress
        self.pool = pool

    def _known(self, old: bytes) -> bytes | None:
        new = self.id_map.get(old)
        return new if new is not None and self.writer.has(new) else None

    def data(self, olds: list[bytes]) -> list[bytes]:
        """The destination ids of source data chunks, storing those the destination lacks."""
        out: dict[bytes, bytes] = {}
        todo = []
        for old in dict.fromkeys(olds):
            new = self._known(old)
            if new is None:
                todo.append(old)
            else:
                out[old] = new
        for start in range(0, len(todo), BATCH):
            batch = todo[start:start + BATCH]
            plains = list(self.pool.map(lambda c: self.src.read_chunk(c, "copied chunk"), batch))
            for old, plain in zip(batch, plains, strict=True):
                new = self.writer.store(plain)
                self.id_map.put(old, new)
                out[old] = new
                self.rep.chunks_read += 1
                if self.progress is not None:
                    self.progress(len(plain))
        return [out[o] for o in olds]

    def item(self, item: Item) -> Item:
        copy = Item(**item)
        kind = item["type"]
        pieces = []
        if kind == "image":
            for hexid in item.get("map", []):
                m = self.src.read_chunk(bytes.fromhex(hexid), "block map")
                ids = [m[i:i + ID_LEN] for i in range(0, len(m), ID_LEN)]
                wanted = [c for c in ids if c != ZERO_ID]
                new = iter(self.data(wanted))
                pieces.append(b"".join(c if c == ZERO_ID else next(new) for c in ids))
        elif kind == "stream":
            for hexid in item.get("map", []):
                entries = list(STREAM_ENTRY.iter_unpack(self.src.read_chunk(bytes.fromhex(hexid), "stream map")))
                new_ids = self.data([c for c, _n in entries])
                pieces.append(b"".join(STREAM_ENTRY.pack(c, n) for c, (_o, n) in zip(new_ids, entries, strict=True)))
        elif kind == "tree":
            read = lambda c: self.src.read_chunk(c, "listing")  # noqa: E731
            for _hexid, listing, lines in iter_tree_pieces(item, read):
                olds = [bytes.fromhex(h) for e in listing for h, _n in _all_refs(e)]
                moved = dict(zip(olds, self.data(olds), strict=True))  # one batch per piece, not per file
                pieces.append(b"".join(self._tree_line(e, line, moved) for e, line in zip(listing, lines, strict=True)))
        else:
            raise IntegrityError(f"item {item['name']}: unknown item type {kind!r}, not copied")
        copy["map"] = [self.writer.store_meta(p).hex() for p in pieces]
        return copy

    def _tree_line(self, entry: TreeEntry, line: bytes, ids: dict[bytes, bytes]) -> bytes:
        if "c" not in entry and "xs" not in entry:
            return line  # no content: the line is the same in every vault
        if "c" in entry:
            entry["c"] = _mapped(entry["c"], ids)
        if "xs" in entry:
            entry["xs"] = {name: _mapped(refs, ids) for name, refs in entry["xs"].items()}
        return encode_entry(entry)


def _all_refs(entry: TreeEntry) -> list:
    refs = list(entry.get("c", ()))
    for stream in entry.get("xs", {}).values():
        refs.extend(stream)
    return refs


def _mapped(refs: Refs, ids: dict[bytes, bytes]) -> Refs:
    return [[ids[bytes.fromhex(h)].hex(), n] for h, n in refs]
