"""Pack files: many sealed chunks in one object, followed by a sealed header and its length.

Layout: ``blob* | sealed(header) | u32le len(sealed(header))``. The header repeats the index entries so that a
pack is self-describing: the index can always be rebuilt from packs, and packs written by a backup that was
killed before it wrote its index are adopted by the next run.
"""

from __future__ import annotations

import contextlib
import mmap
import struct
import threading
from typing import NamedTuple

import zstandard

from orchestrator.errors import IntegrityError
from orchestrator.vault.crypto import AAD_PACK_HEADER, ID_LEN, OVERHEAD, Cipher, content_hash

KIND_DATA = 0
KIND_META = 1
COMP_NONE = 0
COMP_ZSTD = 1

ENTRY = struct.Struct("<32sBBIII")  # id, kind, comp, offset, length, raw_length
HEADER_MAGIC = b"DBPK\x01"
TRAILER = struct.Struct("<I")
PROBE = 4096
SLACK = 2 * 1024 * 1024  # room in a pack buffer beyond its target, for the chunk that fills it


class PackEntry(NamedTuple):
    id: bytes
    kind: int
    comp: int
    offset: int
    length: int
    raw_length: int


def encode_entries(entries: list[PackEntry]) -> bytes:
    return b"".join(ENTRY.pack(*e) for e in entries)


def decode_entries(data: bytes | memoryview, what: str) -> list[PackEntry]:
    if len(data) % ENTRY.size:
        raise IntegrityError(f"{what}: entry table has a bad length")
    return [PackEntry(*t) for t in ENTRY.iter_unpack(data)]


def pack_path(pack_hash: str) -> str:
    return f"data/{pack_hash[:2]}/{pack_hash}"


class PackBuilder:
    """Accumulates compressed, sealed chunks into one buffer (one builder per pack; a reader process reuses its
    builder for each run it sends).

    The buffer is an anonymous memory map of the target size plus room for the chunk that fills it: its pages
    take memory only once written, so a builder that holds a few listing pieces, or the rest of a capture, costs
    what it holds, not a full pack's 18 MiB. A dropped builder's
    pages go back to the system at once, whatever the allocator keeps."""

    def __init__(self, cipher: Cipher, target_size: int, zstd_level: int) -> None:
        self.cipher = cipher
        self.target = target_size
        self.buf = mmap.mmap(-1, target_size + SLACK, flags=mmap.MAP_PRIVATE)
        with contextlib.suppress(AttributeError, OSError):  # 2 MiB pages: 9 page faults to fill it, not 4,600
            self.buf.madvise(mmap.MADV_HUGEPAGE)
        self.pos = 0
        self.entries: list[PackEntry] = []
        self.raw_bytes = 0
        self._zstd = zstandard.ZstdCompressor(level=zstd_level) if zstd_level > 0 else None

    def add(self, cid: bytes, data: bytes | memoryview, kind: int) -> None:
        payload: bytes | memoryview = data
        comp = COMP_NONE
        if self._zstd is not None and (kind == KIND_META or self._worth_compressing(data)):  # listings: text
            packed = self._zstd.compress(data)
            if len(packed) < len(data) - len(data) // 32:  # keep raw when compression gains under ~3%
                payload, comp = packed, COMP_ZSTD
        self._room(self.pos + len(payload) + OVERHEAD + 4096)
        start = self.pos
        self.pos = self.cipher.seal_into(self.buf, start, payload, cid)
        self.entries.append(PackEntry(cid, kind, comp, start, self.pos - start, len(data)))
        self.raw_bytes += len(data)

    def _room(self, need: int) -> None:
        """Make the buffer hold ``need`` bytes: a chunk larger than the slack (never while a view of the buffer
        is out: ``finish``/``body``)."""
        if need > len(self.buf):
            self.buf.resize(need)

    def _worth_compressing(self, data: bytes | memoryview) -> bool:
        """Probe the first 4 KiB: encrypted, compressed or random data is stored as is at a tenth of the cost of
        trying to compress all of it."""
        if len(data) <= 2 * PROBE:
            return True
        assert self._zstd is not None
        return len(self._zstd.compress(data[:PROBE])) < PROBE - PROBE // 32

    def full(self) -> bool:
        return self.pos >= self.target

    def empty(self) -> bool:
        return not self.entries

    def finish(self) -> tuple[str, memoryview, list[PackEntry]]:
        """Append the header; return (pack hash, bytes, entries). The builder must not be reused until reset."""
        header = self.cipher.seal(HEADER_MAGIC + encode_entries(self.entries), AAD_PACK_HEADER)
        end = self.pos + len(header) + TRAILER.size
        self._room(end)
        self.buf[self.pos : self.pos + len(header)] = header
        TRAILER.pack_into(self.buf, self.pos + len(header), len(header))
        view = memoryview(self.buf)[:end]
        return content_hash(view), view, self.entries

    def body(self) -> tuple[memoryview, bytes, int]:
        """The sealed chunks so far, their entry table and raw size: what ``append_sealed`` takes in another
        process."""
        return memoryview(self.buf)[: self.pos], encode_entries(self.entries), self.raw_bytes

    def append_sealed(self, table: bytes, sealed: bytes | memoryview, raw_bytes: int, what: str) -> None:
        """Append chunks that another builder sealed (its ``body`` and entry ``table``, in another process)."""
        entries = decode_entries(table, what)
        size = len(sealed)
        if any(e.offset + e.length > size for e in entries):
            raise IntegrityError(f"{what}: an entry points past the chunks sent")
        start = self.pos
        self._room(start + size + 4096)
        self.buf[start : start + size] = sealed
        self.entries += [e._replace(offset=e.offset + start) for e in entries]
        self.pos = start + size
        self.raw_bytes += raw_bytes

    def reset(self) -> None:
        self.pos = 0
        self.entries = []
        self.raw_bytes = 0


def parse_header(cipher: Cipher, tail: bytes, pack_size: int, what: str) -> list[PackEntry]:
    """Decode a pack's header from the pack's last bytes (``tail`` must contain the whole header + trailer)."""
    if len(tail) < TRAILER.size:
        raise IntegrityError(f"{what}: too short to be a pack")
    (hlen,) = TRAILER.unpack_from(tail, len(tail) - TRAILER.size)
    if hlen + TRAILER.size > min(len(tail), pack_size) or hlen < OVERHEAD:
        raise IntegrityError(f"{what}: header length {hlen} is impossible")
    sealed = tail[len(tail) - TRAILER.size - hlen : len(tail) - TRAILER.size]
    plain = cipher.open(sealed, AAD_PACK_HEADER, f"{what} header")
    if not plain.startswith(HEADER_MAGIC):
        raise IntegrityError(f"{what}: header has a wrong magic")
    entries = decode_entries(memoryview(plain)[len(HEADER_MAGIC) :], what)
    body_end = pack_size - TRAILER.size - hlen
    for e in entries:
        if e.offset + e.length > body_end:
            raise IntegrityError(f"{what}: header entry points past the pack body")
    return entries


class ChunkDecoder:
    """Opens, decompresses and checks one stored chunk (thread-safe: one decompressor per thread)."""

    def __init__(self, cipher: Cipher) -> None:
        self.cipher = cipher
        self._local = threading.local()

    def decode(self, blob: bytes | memoryview, e: PackEntry, what: str) -> bytes:
        plain = self.cipher.open(blob, e.id, what)
        if e.comp == COMP_ZSTD:
            d = getattr(self._local, "d", None)
            if d is None:
                d = self._local.d = zstandard.ZstdDecompressor()
            try:
                plain = d.decompress(plain, max_output_size=e.raw_length)
            except zstandard.ZstdError as err:
                raise IntegrityError(f"{what}: cannot decompress ({err})") from None
        elif e.comp != COMP_NONE:
            raise IntegrityError(f"{what}: unknown compression {e.comp}")
        if len(plain) != e.raw_length or self.cipher.chunk_id(plain) != e.id:
            raise IntegrityError(f"{what}: content does not match its id")
        return plain


assert ENTRY.size == ID_LEN + 14
