"""Block readers: the small interface the CBT core reads images through (size + read at offset)."""

from __future__ import annotations

import os
import stat
import threading
import time
from typing import Protocol

from orchestrator.errors import BadInput


class BlockReader(Protocol):
    size: int

    def readinto(self, offset: int, buf: memoryview) -> int:
        """Fill ``buf`` from ``offset``; return the byte count (short only at the end of the image)."""

    def close(self) -> None: ...


class FileBlockReader:
    """A raw image file or block device."""

    def __init__(self, path: str) -> None:
        try:
            self.fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            raise BadInput(f"image {path} does not exist") from None
        except OSError as e:
            raise BadInput(f"image {path} cannot be opened ({e.strerror})") from None
        st = os.fstat(self.fd)
        if stat.S_ISDIR(st.st_mode):
            os.close(self.fd)
            raise BadInput(f"image {path} is a directory")
        self.size = os.lseek(self.fd, 0, os.SEEK_END) if stat.S_ISBLK(st.st_mode) else st.st_size
        self.path = path

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


class RateLimiter:
    """Token bucket shared by threads: keeps reads (or uploads) under ``rate`` bytes per second."""

    def __init__(self, rate: float) -> None:
        self.rate = float(rate)
        self._lock = threading.Lock()
        self._next = time.monotonic()

    def take(self, nbytes: int) -> None:
        with self._lock:
            now = time.monotonic()
            start = max(now, self._next)
            self._next = start + nbytes / self.rate
            delay = start - now
        if delay > 0:
            time.sleep(delay)


class ThrottledReader:
    def __init__(self, inner: BlockReader, rate: float) -> None:
        self.inner = inner
        self.size = inner.size
        self.limiter = RateLimiter(rate)

    def readinto(self, offset: int, buf: memoryview) -> int:
        self.limiter.take(len(buf))
        return self.inner.readinto(offset, buf)

    def close(self) -> None:
        self.inner.close()
