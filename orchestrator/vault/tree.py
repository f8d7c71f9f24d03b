"""Tree items: a directory tree with full metadata, stored as meta chunks of JSON lines (one entry per line,
sorted by path). Piece boundaries are chosen by a hash of the entry path (CRC-32: a piece ends after an entry whose path
hashes to 0 in its low 4 bits, once the piece holds 4 KiB; at 256 KiB at the latest; about 30 entries a piece),
so inserting a file changes only the piece around it and the rest of the listing deduplicates against the
previous snapshot (a nightly change of 1% of 100,000 files leaves about 70% of the pieces as they were).

Entry fields (short keys keep the listing small): ``p`` path relative to the source root ('' for the root),
``t`` type (f file, d directory, l symlink, h hard link to ``l``, c/b char/block device, p fifo, s socket),
``m`` mode, ``u``/``g`` uid/gid, ``U``/``G`` owner/group names, ``s`` size, ``mt`` mtime ns, ``ct`` ctime ns,
``i`` inode, ``dv`` device, ``rd`` rdev, ``l`` link target, ``x`` xattrs {name: base64} (POSIX ACLs are the
``system.posix_acl_*`` xattrs), ``c`` content [[chunk id hex, length], …], ``e`` error text (unreadable),
``w`` warning text (changed while read), ``a`` Windows attributes and ``sd`` security descriptor (base64) of
share entries, ``xs`` alternate data streams {name: [[chunk id hex, length], …]} of share files.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from typing import Any

import orjson

from orchestrator.errors import IntegrityError
from orchestrator.vault.records import Item, TreeEntry

PIECE_MIN = 4 * 1024
PIECE_MAX = 256 * 1024
BOUNDARY_MASK = 0x0F  # about one boundary every 16 entries once PIECE_MIN is reached

ReadMeta = Callable[[bytes], bytes]

def encode_entry(entry: TreeEntry) -> bytes:
    """One listing line: compact JSON in UTF-8, by orjson (byte for byte what ``json.dumps`` with compact
    separators and ``ensure_ascii=False`` writes, 12 times faster: a first backup encodes a line per file). A
    name that is not valid UTF-8 (Latin-1 names on an old file server) reaches us with its bytes kept as
    surrogates, which orjson refuses; its line is written with JSON escapes, so it stays UTF-8 and reads back to
    the same bytes."""
    try:
        return orjson.dumps(entry) + b"\n"
    except TypeError:  # surrogates (or an integer beyond 64 bits, which json writes as it is)
        text = json.dumps(entry, separators=(",", ":"), ensure_ascii=False)
    try:
        return text.encode() + b"\n"
    except UnicodeEncodeError:
        return json.dumps(entry, separators=(",", ":")).encode() + b"\n"


def printable(path: str) -> str:
    """A path for people and databases: bytes that are not UTF-8 shown as \\xNN escapes."""
    try:
        path.encode()
        return path
    except UnicodeEncodeError:
        return path.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


class TreeWriter:
    """Accumulates entry lines and cuts pieces at content-defined entry boundaries. ``store_meta`` stores a piece
    and gives its id, or a future of it (pieces then get stored while the next ones are cut)."""

    def __init__(self, store_meta: Callable[[bytes], bytes | Future[bytes]]) -> None:
        self.store_meta = store_meta
        #: piece ids in hex (futures of ids until ``finish``)
        self.pieces: list[Any] = []
        #: entries written when each piece ended (so a later capture knows which entries each piece holds)
        self.ends: list[int] = []
        self._buf: list[bytes] = []
        self._size = 0
        self.count = 0

    def add(self, entry: TreeEntry, line: bytes | None = None) -> bytes:
        """Add an entry; ``line`` is its serialized form when already known (unchanged since the parent).
        Returns the line."""
        if line is None:
            line = encode_entry(entry)
        self.add_lines([entry["p"]], [line], 0, 1)
        return line

    def add_lines(self, paths: list[str], lines: list[bytes], i: int, j: int) -> None:
        """Add the already serialized entries i..j-1 of two parallel lists (paths, lines), cutting pieces by the
        boundary rule as they go; one loop for a whole span (the hot path of an incremental)."""
        buf, size, crc, base = self._buf, self._size, zlib.crc32, self.count
        for m in range(i, j):
            line = lines[m]
            buf.append(line)
            size += len(line)
            # surrogateescape: a name that is not UTF-8 hashes as its original bytes
            if size >= PIECE_MAX or (size >= PIECE_MIN and crc(paths[m].encode("utf-8", "surrogateescape"))
                                     & BOUNDARY_MASK == 0):
                self.count = base + m - i + 1
                self._cut()
                buf, size = self._buf, 0
        self.count = base + j - i
        self._size = size

    def add_piece(self, hexid: str, entries: int) -> None:
        """Add a stored piece as it is: the ``entries`` lines it holds come next, unchanged since the snapshot
        that stored it (a nightly incremental reuses most pieces of its parent without joining or hashing)."""
        self._cut()
        self.pieces.append(hexid)
        self.count += entries
        self.ends.append(self.count)

    def _cut(self) -> None:
        if self._buf:
            cid = self.store_meta(b"".join(self._buf))
            self.pieces.append(cid.hex() if isinstance(cid, bytes) else cid)
            self.ends.append(self.count)
            self._buf, self._size = [], 0

    def finish(self) -> list[str]:
        """The pieces' ids, once every piece is stored (raises what storing one raised)."""
        self._cut()
        self.pieces = [p if isinstance(p, str) else p.result().hex() for p in self.pieces]
        return self.pieces


def iter_tree_pieces(item: Item, read_meta: ReadMeta) -> Iterator[tuple[str, list[TreeEntry], list[bytes]]]:
    """Each piece of a tree item: its id, its entries and their serialized lines. Each piece is decoded with one
    json.loads call (JSON strings never hold a raw newline, so lines join into an array safely)."""
    for hexid in item["map"]:
        piece = read_meta(bytes.fromhex(hexid))
        lines = piece.split(b"\n")
        if lines and lines[-1] == b"":
            lines.pop()
        try:
            entries = json.loads(b"[" + b",".join(lines) + b"]")
        except ValueError:
            raise IntegrityError(f"item {item['name']}: tree piece {hexid[:12]} is not valid JSON lines") from None
        if len(entries) != len(lines):
            raise IntegrityError(f"item {item['name']}: tree piece {hexid[:12]} is not valid JSON lines")
        yield hexid, entries, [line + b"\n" for line in lines]


def iter_tree_lines(item: Item, read_meta: ReadMeta) -> Iterator[tuple[TreeEntry, bytes]]:
    """Every entry of a tree item with its serialized line, in path order."""
    for _hexid, entries, lines in iter_tree_pieces(item, read_meta):
        yield from zip(entries, lines, strict=True)


def iter_tree(item: Item, read_meta: ReadMeta) -> Iterator[TreeEntry]:
    """Every entry of a tree item, in path order."""
    for entry, _line in iter_tree_lines(item, read_meta):
        yield entry


def tree_refs(item: Item, read_meta: ReadMeta) -> Iterator[tuple[int, int, bytes, str]]:
    """(offset in file, length, chunk id, path) for every stored piece of file content."""
    for e in iter_tree(item, read_meta):
        offset = 0
        for hexid, length in e.get("c", ()):
            yield offset, length, bytes.fromhex(hexid), e["p"]
            offset += length
