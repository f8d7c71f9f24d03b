"""Time, injectable: the daemon asks a clock, so tests can run months of schedules in milliseconds."""

from __future__ import annotations

import threading
from datetime import datetime, timedelta
from typing import Protocol


class Clock(Protocol):
    def now(self) -> datetime:
        """Aware local time."""

    def wait(self, seconds: float, wake: threading.Event) -> None:
        """Sleep up to ``seconds``, returning early when ``wake`` is set."""


class RealClock:
    def now(self) -> datetime:
        return datetime.now().astimezone()

    def wait(self, seconds: float, wake: threading.Event) -> None:
        wake.wait(max(0.0, seconds))


class FakeClock:
    """A clock that jumps straight to the time the daemon waits for."""

    def __init__(self, start: datetime) -> None:
        self.t = start

    def now(self) -> datetime:
        return self.t

    def wait(self, seconds: float, wake: threading.Event) -> None:
        self.t += timedelta(seconds=max(0.0, seconds))
