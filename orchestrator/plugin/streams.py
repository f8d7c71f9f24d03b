"""Typed capture streams: what a plugin hands to the CBT core. A plugin never sees the vault."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import BinaryIO, Protocol

from orchestrator.cbt.extents import Extent
from orchestrator.cbt.reader import BlockReader


class TreeSource(Protocol):
    """A walkable file tree (local directory, SMB share, generated system state)."""

    #: where the tree comes from, shown to users and recorded with the snapshot ("/srv/docs", "smb://h/share")
    root: str

    def walk(self, previous: Callable[[str], tuple | None] | None = None) -> Iterator[dict | str]:
        """Entries in path order, parents before children, in the vault's tree-entry form (without ``c``).

        A source with a ``signature(entry) -> tuple`` method gets ``previous(path)``: the signature of the
        parent snapshot's entry for that path (None when it has none or it must not be reused). When the live
        object has the same signature, the source may yield just the path; the core then reuses the parent's
        entry, content and listing line without reading or parsing anything."""

    def open(self, entry: dict) -> BinaryIO:
        """Open a regular file for reading (raise OSError when it cannot be read)."""

    def restat(self, entry: dict) -> tuple[int, int] | None:
        """(size, mtime_ns) now, to tell whether the file changed while it was read; None if it is gone."""


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


@dataclass
class ByteStream:
    """A byte stream such as a database dump; ``reader`` needs ``readinto``."""

    name: str
    reader: BinaryIO


Stream = ImageStream | TreeStream | ByteStream


@dataclass
class Capture:
    """What one consistent capture produced."""

    streams: list[Stream]
    #: opaque token stored with the snapshot; the next capture asks for changes since it
    checkpoint: dict | None = None
    #: "application-consistent", "crash-consistent", "file-level" …, recorded with the snapshot
    consistency: str = "file-level"
    warnings: list[str] = field(default_factory=list)
    #: anything the plugin needs at restore time (VM configuration, source root, …)
    meta: dict = field(default_factory=dict)
