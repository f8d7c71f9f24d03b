"""The chunk index: chunk id -> (pack, offset, length, …), kept in memory and stored as write-once index objects.

An index object lists, for some packs, every entry of each pack. Loading reads all index objects; duplicates
(for instance a pack adopted twice) are harmless because they describe the same bytes.
"""

from __future__ import annotations

import struct
from collections import defaultdict
from collections.abc import Iterable
from typing import NamedTuple

from orchestrator.errors import IntegrityError
from orchestrator.vault.crypto import AAD_INDEX, Cipher, content_hash
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


class Index:
    def __init__(self) -> None:
        self.chunks: dict[bytes, Location] = {}
        self.packs: set[str] = set()
        #: index object names this index was loaded from
        self.objects: set[str] = set()

    def __contains__(self, cid: bytes) -> bool:
        return cid in self.chunks

    def get(self, cid: bytes) -> Location | None:
        return self.chunks.get(cid)

    def add_pack(self, pack: str, entries: Iterable[PackEntry]) -> None:
        self.packs.add(pack)
        chunks = self.chunks
        new = tuple.__new__  # namedtuple's own constructor is several times slower; indexes hold millions
        for e in entries:
            if e.id not in chunks:
                chunks[e.id] = new(Location, (pack, e.kind, e.comp, e.offset, e.length, e.raw_length))

    def add_pack_raw(self, pack: str, table: bytes | memoryview) -> None:
        """Add a pack from its encoded entry table (the fast path used when loading index objects)."""
        self.packs.add(pack)
        chunks = self.chunks
        new = tuple.__new__
        for cid, kind, comp, offset, length, raw in ENTRY.iter_unpack(table):
            if cid not in chunks:
                chunks[cid] = new(Location, (pack, kind, comp, offset, length, raw))

    def by_pack(self) -> dict[str, list[PackEntry]]:
        out: dict[str, list[PackEntry]] = defaultdict(list)
        for cid, loc in self.chunks.items():
            out[loc.pack].append(loc.entry(cid))
        return out


def encode_index(cipher: Cipher, packs: dict[str, list[PackEntry]]) -> tuple[str, bytes]:
    parts = [INDEX_MAGIC]
    for pack, entries in packs.items():
        parts.append(PACK_REC.pack(bytes.fromhex(pack), len(entries)))
        parts.append(encode_entries(entries))
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
