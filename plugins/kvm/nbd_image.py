"""A disk exported over NBD, read through libnbd: size, which extents are dirty in a bitmap, which are
allocated, and random reads (one NBD connection per reading thread)."""

from __future__ import annotations

import threading
from typing import Any

from orchestrator.plugin.blocks import Extent
from orchestrator.plugin.errors import BadInput, DobaasError

ALLOCATION = "base:allocation"
STATUS_SPAN = 1 << 30  # one block-status request covers at most this much


def nbd_module() -> Any:
    try:
        import nbd
    except ImportError:
        raise BadInput("the kvm plugin needs libnbd's Python module (Debian: python3-libnbd; `make install` "
                       "links it into the virtualenv)") from None
    return nbd


class NbdImage:
    """BlockReader over one NBD export. ``bitmap`` names the meta context of the dirty bitmap, if any."""

    def __init__(self, uri: str, what: str, bitmap: str | None = None) -> None:
        self.uri, self.what, self.bitmap = uri, what, bitmap
        self._local = threading.local()
        self._handles: list[Any] = []
        self._lock = threading.Lock()
        self.bytes_read = 0
        h = self._handle()
        self.size: int = h.get_size()
        if bitmap and not h.can_meta_context(bitmap):
            raise DobaasError(f"{what}: the NBD export offers no dirty bitmap {bitmap}")

    def _handle(self) -> Any:
        h = getattr(self._local, "h", None)
        if h is None:
            nbd = nbd_module()
            h = nbd.NBD()
            h.add_meta_context(ALLOCATION)
            if self.bitmap:
                h.add_meta_context(self.bitmap)
            try:
                h.connect_uri(self.uri)
            except nbd.Error as e:
                raise DobaasError(f"{self.what}: cannot connect to the NBD export {self.uri}: {e.string}") from None
            self._local.h = h
            with self._lock:
                self._handles.append(h)
        return h

    def _extents(self, context: str, wanted: Any) -> list[Extent]:
        """Merged extents whose flags satisfy ``wanted(flags)`` in meta context ``context``."""
        h = self._handle()
        out: list[Extent] = []
        off = 0
        reached = [0]
        while off < self.size:

            def cb(ctx: str, start: int, entries: list[int], err: Any) -> int:
                if ctx != context:
                    return 0
                pos = start
                for i in range(0, len(entries), 2):
                    length, flags = entries[i], entries[i + 1]
                    if wanted(flags) and length:
                        if out and out[-1][0] + out[-1][1] == pos:
                            out[-1] = (out[-1][0], out[-1][1] + length)
                        else:
                            out.append((pos, length))
                    pos += length
                reached[0] = max(reached[0], pos)
                return 0

            h.block_status(min(self.size - off, STATUS_SPAN), off, cb)
            if reached[0] <= off:
                raise DobaasError(f"{self.what}: the NBD server answered no block status at offset {off}")
            off = reached[0]
        return [(o, min(n, self.size - o)) for o, n in out if o < self.size]

    def changed_extents(self) -> list[Extent]:
        """Extents marked dirty in the bitmap (64 KiB granularity in QEMU)."""
        assert self.bitmap
        return self._extents(self.bitmap, lambda f: f & 1)

    def data_ranges(self) -> list[tuple[int, int]]:
        """Extents that do not read as zeros: all a full capture must read (holes and zeroed areas are skipped)."""
        return self._extents(ALLOCATION, lambda f: not f & 2)

    def readinto(self, offset: int, buf: memoryview) -> int:
        n = min(len(buf), self.size - offset)
        if n <= 0:
            return 0
        data = self._handle().pread(n, offset)
        buf[:n] = data
        with self._lock:
            self.bytes_read += n
        return n

    def close(self) -> None:
        with self._lock:
            handles, self._handles = self._handles, []
        for h in handles:
            try:
                h.shutdown()
            except Exception:
                pass
            close = getattr(h, "close", None)  # older libnbd bindings close on garbage collection
            if close:
                close()
