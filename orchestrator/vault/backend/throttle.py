"""Bandwidth limits for vault uploads: a token bucket, and a backend decorator that applies it to ``put``
(a vault directory on a mount reached over a slow link). The SFTP backend applies the same bucket per write
request, so an upload is smooth rather than bursty."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

from orchestrator.vault.backend import Backend


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


class ThrottledBackend:
    """Any backend, with its uploads kept under ``rate`` bytes per second; everything else passes through."""

    def __init__(self, inner: Backend, rate: float) -> None:
        self.inner = inner
        self.location = inner.location
        self.limiter = RateLimiter(rate)

    def put(self, name: str, data: bytes | memoryview) -> None:
        self.limiter.take(len(data))
        self.inner.put(name, data)

    def get(self, name: str) -> bytes:
        return self.inner.get(name)

    def get_range(self, name: str, offset: int, length: int) -> bytes:
        return self.inner.get_range(name, offset, length)

    def exists(self, name: str) -> bool:
        return self.inner.exists(name)

    def list(self, prefix: str) -> Iterator[tuple[str, int]]:
        return self.inner.list(prefix)

    def delete(self, name: str) -> None:
        self.inner.delete(name)

    def close(self) -> None:
        self.inner.close()

    def __getattr__(self, name: str) -> Any:  # optional capabilities (usage, make_layout, …) of the inner one
        return getattr(self.inner, name)
