"""Block devices as plugins hand them to the core: byte ranges (extents) and the small reader interface
(size + read at an offset). The core's own readers (files, block devices, throttling) live in
orchestrator.cbt.reader."""

from __future__ import annotations

from typing import Protocol

Extent = tuple[int, int]  # (offset, length) in bytes


class BlockReader(Protocol):
    size: int

    def readinto(self, offset: int, buf: memoryview) -> int:
        """Fill ``buf`` from ``offset``; return the byte count (short only at the end of the image)."""

    def close(self) -> None: ...
