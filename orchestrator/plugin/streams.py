"""Typed capture streams: what a plugin hands to the CBT core. A plugin never sees the vault."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from orchestrator.plugin.blocks import BlockReader, Extent
from orchestrator.vault.tree import TreeEntry  # the vault's tree-entry form, for plugins

#: What the core consumes from a walk, in walk order: ``(i, j)`` the parent listing's entries i..j-1 are unchanged;
#: ``(k, entry)`` a new or changed entry, k its index in the parent listing or -1.
WalkItem = tuple[int, int] | tuple[int, TreeEntry]


class SourceFile(Protocol):
    """A file opened by a TreeSource: read whole or through readinto (raw or buffered), closed by ``with``."""

    def read(self, size: int = -1, /) -> Any: ...

    def readinto(self, b: Any, /) -> int | None: ...

    def close(self) -> None: ...

    def __enter__(self) -> Any: ...

    def __exit__(self, exc_type: Any, exc: Any, tb: Any, /) -> Any: ...


class TreeSource(Protocol):
    """A walkable file tree (local directory, SMB share, generated system state)."""

    #: where the tree comes from, shown to users and recorded with the snapshot ("/srv/docs", "smb://h/share")
    root: str

    def walk(self, previous: Callable[[str], Any] | None = None) -> Iterator[TreeEntry | str]:
        """Entries in path order, parents before children, in the vault's tree-entry form (without ``c``).

        A source with a ``signature(entry)`` method (any comparable value: tuple, bytes) gets
        ``previous(path)``: the signature of the parent snapshot's entry for that path (None when it has none or
        it must not be reused). When the live object has the same signature, the source may yield just the path;
        the core then reuses the parent's entry, content and listing line without reading or parsing anything."""

    # Optional: ``walk_delta(paths, signatures) -> Iterator[WalkItem] | None`` walks elsewhere (another process)
    # against the parent listing given as two lists in walk order; the core then uses it instead of ``walk``
    # (None: it cannot here, use ``walk``).

    def open(self, entry: TreeEntry) -> SourceFile:
        """Open a regular file for reading (raise OSError when it cannot be read)."""

    def restat(self, entry: TreeEntry) -> tuple[int, int] | None:
        """(size, mtime_ns) now, to tell whether the file changed while it was read; None if it is gone."""


class UnsupportedEntry(Exception):
    """A sink cannot hold this kind of entry (a symbolic link on a share, a device file without root)."""


class TreeSink(Protocol):
    """Where restored entries are written: a local directory (orchestrator.restore.local_sink) or a plugin's
    destination such as a share (``SourcePlugin.open_sink``). One restore loop (orchestrator.restore.tree)
    drives every sink; paths are relative to the sink's root, in path order, parents before children."""

    #: the location written to, as users see it ("/tmp/restore", "smb://server/share/folder")
    root: str

    def lexists(self, rel: str) -> tuple[bool, bool, int]:
        """(exists, is a directory, modification time ns) of ``rel``, without following links."""

    def make_dir(self, rel: str) -> None:
        """Create a directory and its missing parents (no error when it exists); never through a link."""

    def remove(self, rel: str) -> None:
        """Remove the non-directory at ``rel`` (a directory of the snapshot replaces it)."""

    def write_file(self, rel: str, chunks: Iterator[bytes], entry: TreeEntry) -> int:
        """Write a file completely under a temporary name, then put it in place; on any failure (a damaged chunk
        raises from ``chunks``) remove the temporary file and re-raise. A sink may set the entry's metadata
        here already (the local one does, on the descriptor, before the rename). Returns the bytes written."""

    def write_stream(self, rel: str, name: str, chunks: Iterator[bytes]) -> int:
        """An alternate data stream (``:name:$DATA``) of a file already written; OSError when it cannot be kept."""

    def make_special(self, rel: str, entry: TreeEntry, link_to: str | None) -> None:
        """A symbolic link, a hard link to ``link_to`` (restored earlier in this restore), a FIFO or a device
        file; raise UnsupportedEntry when the destination cannot hold it."""

    def set_meta(self, rel: str, entry: TreeEntry) -> None:
        """What the destination can hold of an entry's metadata: a directory's once its contents are restored,
        a file's once its streams are (nothing to do for a sink that set it in ``write_file``)."""

    def close(self) -> None: ...


@dataclass
class ImageStream:
    """A block device: size + random reads, and optionally the extents changed since the checkpoint."""

    name: str
    reader: BlockReader
    changed_extents: list[Extent] | None = None


@dataclass
class TreeStream:
    name: str
    source: TreeSource


class Readable(Protocol):
    """What a byte stream is read through: ``readinto`` (raw files, pipes, IterReader)."""

    def readinto(self, b: Any, /) -> int | None: ...


@dataclass
class ByteStream:
    """A byte stream such as a database dump; ``reader`` needs ``readinto``."""

    name: str
    reader: Readable


@dataclass
class CarriedItem:
    """An item of the previous snapshot of the same source, referenced again under ``name`` (no data is read or
    stored): lets a snapshot hold everything its restore needs, e.g. the previous dump that its archived logs
    replay onto, so that no snapshot depends on another one that retention may delete."""

    name: str
    from_item: str


class IterReader:
    """``readinto`` over an iterator of byte strings: how a plugin that generates data (a dump written row by
    row) hands it to the core as a ByteStream without staging it."""

    def __init__(self, parts: Iterator[bytes]) -> None:
        self._parts = parts
        self._buf = b""
        self._pos = 0

    def readinto(self, b: memoryview) -> int:
        while self._pos >= len(self._buf):
            nxt = next(self._parts, None)
            if nxt is None:
                return 0
            self._buf, self._pos = nxt, 0
        n = min(len(b), len(self._buf) - self._pos)
        b[:n] = self._buf[self._pos : self._pos + n]
        self._pos += n
        return n


Stream = ImageStream | TreeStream | ByteStream | CarriedItem


@dataclass
class Capture:
    """What one consistent capture produced."""

    streams: Sequence[Stream]
    #: opaque token stored with the snapshot; the next capture asks for changes since it
    checkpoint: dict | None = None
    #: "application-consistent", "crash-consistent", "file-level" …, recorded with the snapshot
    consistency: str = "file-level"
    warnings: list[str] = field(default_factory=list)
    #: anything the plugin needs at restore time (VM configuration, source root, …)
    meta: dict = field(default_factory=dict)
    #: called once every stream is stored, just before the snapshot is committed; what it returns becomes the
    #: checkpoint (Hyper-V turns its checkpoint into an RCT reference point only when all its data is safe)
    finish: Callable[[], dict | None] | None = None
