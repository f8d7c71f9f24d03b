"""Stopping a backup from outside, in any thread: the daemon's SIGTERM and a backup window's end fire the
signal, and the vault writer raises the reason at its next chunk — so a run stops at a chunk boundary wherever
its work happens (pipeline threads, concurrent sources), publishes nothing partial, and the next run resumes."""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import datetime


class AbortSignal:
    def __init__(self) -> None:
        self._make: Callable[[], BaseException] | None = None
        self._lock = threading.Lock()
        self._timer: threading.Timer | None = None

    def fire(self, make: Callable[[], BaseException]) -> None:
        """From now on, ``check`` raises ``make()`` (the first reason given wins)."""
        with self._lock:
            if self._make is None:
                self._make = make

    @property
    def fired(self) -> bool:
        return self._make is not None

    def check(self) -> None:
        make = self._make
        if make is not None:
            raise make()

    def fire_at(self, at: datetime, now: datetime, make: Callable[[], BaseException]) -> None:
        """Fire at ``at`` (a backup window's end); ``cancel`` disarms it."""
        self.cancel()
        self._timer = threading.Timer(max(0.0, (at - now).total_seconds()), self.fire, (make,))
        self._timer.daemon = True
        self._timer.start()

    def cancel(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
