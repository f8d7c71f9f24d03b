"""A virtual disk read through its VHDX file (libvhdi, on a file object: an SMB file, or a local one), with its
differencing parents. Unallocated blocks read as zeros without touching the file, so a first backup sends over
SMB only what the disk holds."""

from __future__ import annotations

import ntpath
import threading
from collections.abc import Callable
from typing import Any

from orchestrator.plugin.errors import DobaasError, IntegrityError

MAX_CHAIN = 64


class VhdxReader:
    """A BlockReader over a VHDX (or VHD) and its parents. ``open_file(host_path)`` opens one file of the chain
    (the parent locators name host paths). Reads are serialized: libvhdi's handle is not thread-safe."""

    def __init__(self, host_path: str, open_file: Callable[[str], Any]) -> None:
        import pyvhdi

        self._lock = threading.Lock()
        self._objects: list[Any] = []
        self._handles: list[Any] = []
        self.chain: list[str] = []
        path = host_path
        try:
            while True:
                fo = open_file(path)
                self._objects.append(fo)
                h = pyvhdi.file()
                h.open_file_object(fo)
                self._handles.append(h)
                self.chain.append(path)
                parent = h.parent_filename
                if not parent:
                    break
                if len(self.chain) >= MAX_CHAIN:
                    raise DobaasError(f"{host_path}: differencing chain longer than {MAX_CHAIN}")
                path = parent if ntpath.isabs(parent) else ntpath.join(ntpath.dirname(path), parent)
            for child, parent_handle in zip(self._handles, self._handles[1:], strict=False):
                child.set_parent(parent_handle)
        except OSError as e:
            self.close()
            raise IntegrityError(f"{path}: not a readable virtual disk ({e})") from None
        except BaseException:
            self.close()
            raise
        self.size = int(self._handles[0].media_size)

    def readinto(self, offset: int, buf: memoryview) -> int:
        n = min(len(buf), max(0, self.size - offset))
        if n <= 0:
            return 0
        with self._lock:
            data = self._handles[0].read_buffer_at_offset(n, offset)
        buf[: len(data)] = data
        return len(data)

    def close(self) -> None:
        for h in self._handles:
            try:
                h.close()
            except Exception:
                pass
        for fo in self._objects:
            try:
                fo.close()
            except Exception:
                pass
        self._handles, self._objects = [], []
