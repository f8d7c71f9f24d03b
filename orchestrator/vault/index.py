"""The chunk index: chunk id -> (pack, offset, length, …), kept in memory and stored as write-once index objects.

An index object lists, for some packs, every entry of each pack. Loading reads all index objects; duplicates
(for instance a pack adopted twice) are harmless because they describe the same bytes.
"""

from __future__ import annotations

import bisect
import struct
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping
from operator import itemgetter
from typing import NamedTuple

from orchestrator.errors import IntegrityError
from orchestrator.vault.crypto import AAD_INDEX, Cipher, content_hash
from orchestrator.vault.diskindex import REC, DiskTable
from orchestrator.vault.pack import ENTRY, PackEntry, decode_entries, encode_entries

INDEX_MAGIC = b"DBIX\x01"
PACK_REC = struct.Struct("<32sI")  # pack hash (raw), entry count


class Location(NamedTuple):
    pack: str  # pack hash, hex
    kind: int
    comp: int
    offset: int
    length: int
    raw_length: int

    def entry(self, cid: bytes) -> PackEntry:
        return PackEntry(cid, self.kind, self.comp, self.offset, self.length, self.raw_length)


class ChunkMap(Mapping[bytes, Location]):
    """chunk id -> Location over the packs' encoded entry tables, as read from the index objects. Loading
    builds one dict of chunk id -> entry number with C-level iteration only (a vault of 170,000 chunks loads in
    hundredths of a second, not the 0.4 s of one Location object per chunk); a Location is decoded when asked
    for. The first pack to list a chunk keeps it (later copies describe the same bytes)."""

    def __init__(self) -> None:
        self._ids: dict[bytes, int] = {}
        self._bases: list[int] = []  # first entry number of each table, ascending
        self._tables: list[tuple[str, bytes | memoryview]] = []
        self._count = 0

    def add(self, pack: str, table: bytes | memoryview) -> None:
        n = len(table) // ENTRY.size
        base = self._count
        self._bases.append(base)
        self._tables.append((pack, table))
        self._count += n
        new = dict(zip(map(itemgetter(0), ENTRY.iter_unpack(table)), range(base, base + n), strict=True))
        ids = self._ids
        if ids:
            for cid in new.keys() & ids.keys():
                del new[cid]
        ids.update(new)

    def __contains__(self, cid: object) -> bool:
        return cid in self._ids

    def __len__(self) -> int:
        return len(self._ids)

    def __iter__(self) -> Iterator[bytes]:
        return iter(self._ids)

    def copies(self, wanted: set[bytes]) -> dict[bytes, list[tuple[str, int]]]:
        """Every (pack, entry number) listing one of ``wanted``: a chunk stored twice has two copies."""
        out: dict[bytes, list[tuple[str, int]]] = {}
        for base, (pack, table) in zip(self._bases, self._tables, strict=True):
            for n, fields in enumerate(ENTRY.iter_unpack(table)):
                if fields[0] in wanted:
                    out.setdefault(fields[0], []).append((pack, base + n))
        return out

    def point(self, cid: bytes, number: int) -> None:
        """Make ``cid`` resolve to entry ``number`` (one of its ``copies``)."""
        self._ids[cid] = number

    def drop(self, cid: bytes) -> None:
        self._ids.pop(cid, None)

    def __getitem__(self, cid: bytes) -> Location:
        number = self._ids[cid]
        t = bisect.bisect_right(self._bases, number) - 1
        pack, table = self._tables[t]
        _cid, kind, comp, offset, length, raw = ENTRY.unpack_from(table, (number - self._bases[t]) * ENTRY.size)
        return Location(pack, kind, comp, offset, length, raw)


class DiskChunkMap(Mapping[bytes, Location]):
    """ChunkMap's interface over a DiskTable plus an in-memory overlay (what was added since the table)."""

    def __init__(self, table: DiskTable, overlay: ChunkMap) -> None:
        self.table = table
        self.overlay = overlay
        self._override: dict[bytes, int | None] = {}  # damaged copies: a chunk pointed elsewhere, or dropped

    def _number(self, cid: bytes) -> int | None:
        if cid in self._override:
            return self._override[cid]
        found = self.table.find(cid)
        return found[0] if found else None

    def add(self, pack: str, table: bytes | memoryview) -> None:
        self.overlay.add(pack, table)

    def __contains__(self, cid: object) -> bool:
        if cid in self.overlay:
            return True
        return isinstance(cid, bytes) and self._number(cid) is not None

    def __getitem__(self, cid: bytes) -> Location:
        number = self._number(cid)
        if number is None:
            return self.overlay[cid]
        _id, pack, kind, comp, offset, length, raw = self.table.record(number)
        return Location(self.table.packs[pack], kind, comp, offset, length, raw)

    def __len__(self) -> int:
        dropped = sum(1 for n in self._override.values() if n is None)
        return self.table.unique - dropped + sum(1 for c in self.overlay if self._number(c) is None)

    def __iter__(self) -> Iterator[bytes]:
        seen_last = b""
        for raw in self.table.scan():
            for i in range(len(raw) // REC):
                cid = raw[i * REC:i * REC + 32]
                if cid != seen_last and self._override.get(cid, 0) is not None:
                    yield cid
                seen_last = cid
        for cid in self.overlay:
            if self._number(cid) is None:
                yield cid

    def copies(self, wanted: set[bytes]) -> dict[bytes, list[tuple[str, int]]]:
        out: dict[bytes, list[tuple[str, int]]] = {}
        for cid in wanted:
            for number in self.table.find(cid):
                out.setdefault(cid, []).append((self.table.packs[self.table.record(number)[1]], number))
        base = self.table.records  # overlay entries numbered after the table's
        for cid, found in self.overlay.copies(wanted).items():
            out.setdefault(cid, []).extend((pack, base + n) for pack, n in found)
        return out

    def point(self, cid: bytes, number: int) -> None:
        if number >= self.table.records:
            self.overlay.point(cid, number - self.table.records)
            self._override[cid] = None
        else:
            self._override[cid] = number

    def drop(self, cid: bytes) -> None:
        self._override[cid] = None
        self.overlay.drop(cid)


class Index:
    def __init__(self) -> None:
        self.chunks: ChunkMap | DiskChunkMap = ChunkMap()
        self.packs: set[str] = set()
        #: index object names this index was loaded from
        self.objects: set[str] = set()
        #: index objects that did not decode (damage, or an upload cut short), name -> why
        self.damaged: dict[str, str] = {}
        #: packs no readable index object describes, indexed from their own headers (not yet in an index object)
        self.from_headers: dict[str, list[PackEntry]] = {}
        #: packs no readable index object describes and whose header does not parse, name -> why
        self.unreadable: dict[str, str] = {}
        #: chunks whose every copy is recorded damaged (orchestrator.vault.damage), id -> why: absent for backups
        #: (the next one that meets the data stores it again), named as damaged to readers
        self.quarantined: dict[bytes, str] = {}
        #: packs holding a recorded damaged copy of a chunk that now resolves to a good copy elsewhere, pack ->
        #: those chunk ids: garbage collection rewrites these packs without the bad copies
        self.superseded: dict[str, set[bytes]] = {}
        self.damage_records: dict[bytes, dict[str, str]] = {}

    def use_table(self, table: DiskTable) -> None:
        """Serve the chunks the local table holds from disk (a large vault); what is added stays in memory."""
        self.chunks = DiskChunkMap(table, ChunkMap())
        self.packs.update(table.packs)
        self.objects.update(table.objects)

    def __contains__(self, cid: bytes) -> bool:
        return cid in self.chunks

    def get(self, cid: bytes) -> Location | None:
        return self.chunks.get(cid)

    def add_pack(self, pack: str, entries: Iterable[PackEntry]) -> None:
        self.add_pack_raw(pack, encode_entries(list(entries)))

    def add_pack_raw(self, pack: str, table: bytes | memoryview) -> None:
        """Add a pack from its encoded entry table (the form index objects hold)."""
        if len(table) % ENTRY.size:
            raise IntegrityError(f"pack {pack[:12]}: index entry table has a bad length")
        self.packs.add(pack)
        self.chunks.add(pack, table)

    def apply_damage(self, records: dict[bytes, dict[str, str]]) -> None:
        """Resolve every recorded chunk to a copy not recorded damaged, or quarantine it when it has none."""
        self.damage_records = records
        if not records:
            return
        self.quarantined.clear()
        self.superseded.clear()
        copies = self.chunks.copies(set(records))
        for cid, bad in records.items():
            good = [number for pack, number in copies.get(cid, []) if pack not in bad]
            if good:
                self.chunks.point(cid, good[0])
                for pack in bad:
                    if pack in self.packs:
                        self.superseded.setdefault(pack, set()).add(cid)
            else:
                self.chunks.drop(cid)
                self.quarantined[cid] = next(iter(bad.values()))

    def by_pack(self) -> dict[str, list[PackEntry]]:
        out: dict[str, list[PackEntry]] = defaultdict(list)
        for cid, loc in self.chunks.items():
            out[loc.pack].append(loc.entry(cid))
        return out


def encode_index(cipher: Cipher, packs: dict[str, list[PackEntry]]) -> tuple[str, bytes]:
    return encode_index_raw(cipher, {pack: encode_entries(entries) for pack, entries in packs.items()})


def encode_index_raw(cipher: Cipher, tables: dict[str, bytes]) -> tuple[str, bytes]:
    """An index object from each pack's encoded entry table (a third of the memory of entry objects)."""
    parts = [INDEX_MAGIC]
    for pack, table in tables.items():
        parts.append(PACK_REC.pack(bytes.fromhex(pack), len(table) // ENTRY.size))
        parts.append(table)
    sealed = cipher.seal(b"".join(parts), AAD_INDEX)
    return "index/" + content_hash(sealed), sealed


def decode_index(cipher: Cipher, name: str, sealed: bytes) -> dict[str, list[PackEntry]]:
    what = f"index object {name}"
    return {pack: decode_entries(table, what) for pack, table in decode_index_raw(cipher, name, sealed)}


def decode_index_raw(cipher: Cipher, name: str, sealed: bytes) -> list[tuple[str, memoryview]]:
    """(pack hash, encoded entry table) for every pack an index object describes."""
    plain = memoryview(cipher.open(sealed, AAD_INDEX, f"index object {name}"))
    if bytes(plain[: len(INDEX_MAGIC)]) != INDEX_MAGIC:
        raise IntegrityError(f"index object {name}: wrong magic")
    pos = len(INDEX_MAGIC)
    out: list[tuple[str, memoryview]] = []
    try:
        while pos < len(plain):
            raw_pack, count = PACK_REC.unpack_from(plain, pos)
            pos += PACK_REC.size
            end = pos + count * ENTRY.size
            if end > len(plain):
                raise IntegrityError(f"index object {name}: truncated")
            out.append((raw_pack.hex(), plain[pos:end]))
            pos = end
    except struct.error:
        raise IntegrityError(f"index object {name}: truncated") from None
    return out
