"""Block readers of the core: raw files and block devices, and a throttle (the interface is
``orchestrator.plugin.blocks.BlockReader``)."""

from __future__ import annotations

import errno
import os
import stat

from orchestrator.errors import BadInput
from orchestrator.plugin.blocks import BlockReader
from orchestrator.vault.backend.throttle import RateLimiter


class FileBlockReader:
    """A raw image file or block device."""

    def __init__(self, path: str) -> None:
        try:  # O_NONBLOCK: opening a FIFO without a writer would block for ever
            self.fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        except FileNotFoundError:
            raise BadInput(f"image {path} does not exist") from None
        except OSError as e:
            raise BadInput(f"image {path} cannot be opened ({e.strerror})") from None
        st = os.fstat(self.fd)
        if not (stat.S_ISREG(st.st_mode) or stat.S_ISBLK(st.st_mode)):
            os.close(self.fd)
            kind = "a directory" if stat.S_ISDIR(st.st_mode) else "not a regular file or block device"
            raise BadInput(f"image {path} is {kind}")
        os.set_blocking(self.fd, True)
        self.is_device = stat.S_ISBLK(st.st_mode)
        self.size = os.lseek(self.fd, 0, os.SEEK_END) if self.is_device else st.st_size
        self.path = path

    def data_ranges(self) -> list[tuple[int, int]] | None:
        """Allocated (offset, length) ranges of a sparse file via SEEK_DATA/SEEK_HOLE; holes read as zeros, so
        a full capture need not read them. None when the file system cannot tell (or for block devices)."""
        if self.is_device:
            return None
        out: list[tuple[int, int]] = []
        pos = 0
        try:
            while pos < self.size:
                try:
                    start = os.lseek(self.fd, pos, os.SEEK_DATA)
                except OSError as e:
                    if e.errno == errno.ENXIO:  # no data after pos
                        break
                    raise
                end = min(os.lseek(self.fd, start, os.SEEK_HOLE), self.size)
                out.append((start, end - start))
                pos = end
        except OSError:
            return None
        return out

    def readinto(self, offset: int, buf: memoryview) -> int:
        done = 0
        while done < len(buf):
            n = os.preadv(self.fd, [buf[done:]], offset + done)
            if n == 0:
                break
            done += n
        return done

    def close(self) -> None:
        os.close(self.fd)


class ThrottledReader:
    def __init__(self, inner: BlockReader, rate: float) -> None:
        self.inner = inner
        self.size = inner.size
        self.limiter = RateLimiter(rate)

    def data_ranges(self) -> list[tuple[int, int]] | None:
        inner = getattr(self.inner, "data_ranges", None)
        return inner() if inner else None

    def readinto(self, offset: int, buf: memoryview) -> int:
        self.limiter.take(len(buf))
        return self.inner.readinto(offset, buf)

    def close(self) -> None:
        self.inner.close()
