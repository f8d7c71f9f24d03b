"""A tree item's listing held in columns, in walk order: what the next incremental of the same source compares
against and reuses. Columns, not one tuple per entry, because a nightly run of 100,000 unchanged files copies
whole spans of them (``extend``) and loads them from the local cache in a few hundredths of a second."""

from __future__ import annotations

import bisect
from array import array
from collections.abc import Callable

from orchestrator.vault.tree import TreeEntry


class Listing:
    def __init__(self) -> None:
        self.paths: list[str] = []
        #: the source's signature of each entry (None: the entry must be examined again, never reused)
        self.sigs: list[object] = []
        #: each entry's serialized listing line (see orchestrator.vault.tree)
        self.lines: list[bytes] = []
        self._kinds: list[str] = []
        self.kinds = ""  # entry types, one character each ('f' file, 'd' directory, …), once ``seal``ed
        self.sizes = array("q")
        #: index -> (device, inode) of regular files with several names: later names become hard links
        self.links: dict[int, tuple[int, int]] = {}
        self._link_keys: list[int] | None = None
        #: the stored pieces of this listing (chunk ids, hex) and the entry count at the end of each
        self.pieces: list[str] = []
        self.piece_ends: list[int] = []

    def __len__(self) -> int:
        return len(self.paths)

    def append(self, e: TreeEntry, line: bytes, sig: object) -> None:
        if e["t"] == "f" and e.get("n", 1) > 1:
            self.links[len(self.paths)] = (e.get("dv", 0), e.get("i", 0))
        self.paths.append(e["p"])
        self.sigs.append(sig)
        self.lines.append(line)
        self._kinds.append(e["t"])
        self.sizes.append(e.get("s", 0) if e["t"] == "f" else 0)

    def placeholder(self) -> int:
        """Reserve the next position for an entry whose content is still being read; ``fill`` it later."""
        self.paths.append("")
        self.sigs.append(None)
        self.lines.append(b"")
        self._kinds.append("f")
        self.sizes.append(0)
        return len(self.paths) - 1

    def fill(self, k: int, e: TreeEntry, line: bytes, sig: object) -> None:
        if e["t"] == "f" and e.get("n", 1) > 1:
            self.links[k] = (e.get("dv", 0), e.get("i", 0))
        assert e["t"] == "f", "only regular files are read"  # so the type column already says 'f'
        self.paths[k], self.sigs[k], self.lines[k] = e["p"], sig, line
        self.sizes[k] = e.get("s", 0)

    def extend(self, other: Listing, i: int, j: int) -> None:
        """Append ``other``'s entries i..j-1 as they are."""
        base = len(self.paths)
        self.paths += other.paths[i:j]
        self.sigs += other.sigs[i:j]
        self.lines += other.lines[i:j]
        self._kinds.append(other.kinds[i:j])  # a span: joined by ``seal``
        self.sizes += other.sizes[i:j]
        for k in other.links_in(i, j):
            self.links[base + k - i] = other.links[k]

    def links_in(self, i: int, j: int) -> list[int]:
        """Indexes in i..j-1 of files with several names (asked of a parent listing, which no longer changes)."""
        if not self.links:
            return []
        if self._link_keys is None or len(self._link_keys) != len(self.links):
            self._link_keys = sorted(self.links)
        keys = self._link_keys
        return keys[bisect.bisect_left(keys, i) : bisect.bisect_left(keys, j)]

    def seal(self) -> Listing:
        """Join the type column (after the last ``append``/``extend``)."""
        if self._kinds:
            self.kinds += "".join(self._kinds)
            self._kinds = []
        return self

    def files_and_bytes(self, i: int, j: int) -> tuple[int, int]:
        """Regular files among entries i..j-1, and their total size."""
        return self.kinds.count("f", i, j), sum(self.sizes[i:j])

    def whole_pieces(self, i: int, j: int) -> list[tuple[int, int, str]]:
        """(start, end, id) of the stored pieces that lie wholly within entries i..j-1. Not the last piece: it
        ended because the listing did, and another listing may go on past it."""
        ends, out = self.piece_ends, []
        p = bisect.bisect_right(ends, i)  # the piece holding entry i
        start = ends[p - 1] if p else 0
        while p < len(ends) - 1 and ends[p] <= j:
            if start >= i:
                out.append((start, ends[p], self.pieces[p]))
            start = ends[p]
            p += 1
        return out

    # ---- the compact form of the local cache ----------------------------------------------------------------
    def columns(self) -> tuple:
        self.seal()
        return (self.paths, self.sigs, self.lines, self.kinds, self.sizes.tobytes(), self.links, self.pieces,
                self.piece_ends)

    @classmethod
    def from_columns(cls, cols: tuple) -> Listing:
        paths, sigs, lines, kinds, sizes, links, pieces, piece_ends = cols
        if not (len(paths) == len(sigs) == len(lines) == len(kinds) == len(sizes) // 8) or \
                len(pieces) != len(piece_ends) or (piece_ends and piece_ends[-1] != len(paths)):
            raise ValueError("columns of different lengths")
        out = cls()
        out.paths, out.sigs, out.lines, out.kinds, out.links = paths, sigs, lines, kinds, links
        out.pieces, out.piece_ends = pieces, piece_ends
        out.sizes.frombytes(sizes)
        return out

    @classmethod
    def from_pieces(cls, pieces, sig: Callable[[TreeEntry], object]) -> Listing:
        """From the (id, entries, lines) pieces of a stored listing, ``sig`` giving each reusable entry's
        signature."""
        out = cls()
        for hexid, entries, lines in pieces:
            for e, line in zip(entries, lines, strict=True):
                out.append(e, line, sig(e))
            out.pieces.append(hexid)
            out.piece_ends.append(len(out.paths))
        return out.seal()
