"""Run every policy of a directory on its cron schedule (``schedule:``, local time).

- Catch-up: a run missed while the daemon was down (a scheduled time between the policy's last job in the
  catalog and now) runs once at start; optional.
- After a run in which every source saved a snapshot, the policy's retention is applied to its sources.
- SIGHUP reloads the policies; SIGTERM stops: a run in progress is aborted (the vault publishes nothing
  partial, and the next run reuses what was stored), then the daemon exits.
- Policies run one at a time, so two runs of the same source never overlap.
"""

from __future__ import annotations

import glob
import logging
import os
import signal
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from croniter import croniter

from orchestrator.errors import DobaasError
from orchestrator.policy.model import Policy, load_policy
from orchestrator.scheduler.clock import Clock, RealClock

log = logging.getLogger(__name__)

Runner = Callable[[Policy, str], object]
CHECK_EVERY = 3600.0  # the daemon wakes at least hourly for its periodic checks
LastRun = Callable[[str], datetime | None]


class StopRequested(BaseException):
    """Raised in the main thread by SIGTERM to abort a run in progress (BaseException: not swallowed as an
    ordinary error by a source's error handling)."""


@dataclass
class Entry:
    policy: Policy
    next_run: datetime


@dataclass
class Scheduler:
    directory: str
    runner: Runner
    clock: Clock = field(default_factory=RealClock)
    last_run: LastRun = lambda _name: None
    catch_up: bool = True
    run_now: bool = False
    #: called once per loop with the loaded policies (the daemon's periodic checks: sources without success)
    on_tick: Callable[[list[Policy]], None] | None = None
    entries: dict[str, Entry] = field(default_factory=dict)
    wake: threading.Event = field(default_factory=threading.Event)
    stopping: bool = False
    reload_requested: bool = False

    def load(self, first: bool = False) -> None:
        now = self.clock.now()
        found: dict[str, Entry] = {}
        for path in sorted(glob.glob(os.path.join(self.directory, "*.yaml"))
                           + glob.glob(os.path.join(self.directory, "*.yml"))):
            try:
                p = load_policy(path)
            except DobaasError as e:
                log.error("policy %s ignored: %s", path, e)
                continue
            if not p.schedule:
                log.warning("policy %s has no schedule; the daemon does not run it", path)
                continue
            if p.policy in found:
                log.error("policy name %s is used twice (%s); the second is ignored", p.policy, path)
                continue
            found[p.policy] = Entry(p, self._first_run(p, now, first))
        self.entries = found
        log.info("loaded %d scheduled policies from %s", len(found), self.directory)

    def _first_run(self, p: Policy, now: datetime, first: bool) -> datetime:
        if first and self.run_now:
            return now
        old = self.entries.get(p.policy)
        if old is not None and old.policy.schedule == p.schedule:
            return old.next_run
        if first and self.catch_up:
            last = self.last_run(p.policy)
            if last is not None:
                missed = croniter(p.schedule, last.astimezone(now.tzinfo)).get_next(datetime)
                if missed <= now:
                    log.info("policy %s missed its run of %s: catching up now", p.policy, missed)
                    return now
        return croniter(p.schedule, now).get_next(datetime)

    def step(self) -> bool:
        """Run what is due, then wait for the next due time. Returns False once stopping."""
        if self.reload_requested:
            self.reload_requested = False
            self.load()
        now = self.clock.now()
        for name, entry in sorted(self.entries.items(), key=lambda kv: kv[1].next_run):
            if self.stopping:
                return False
            if entry.next_run <= now:
                log.info("running policy %s (due %s)", name, entry.next_run)
                try:
                    self.runner(entry.policy, "schedule")
                except DobaasError as e:
                    log.error("policy %s failed: %s", name, e)
                entry.next_run = croniter(entry.policy.schedule, self.clock.now()).get_next(datetime)
        if self.stopping:
            return False
        if self.on_tick:
            self.on_tick([e.policy for e in self.entries.values()])
        wait = CHECK_EVERY
        if self.entries:
            until = min(e.next_run for e in self.entries.values())
            wait = min(wait, (until - self.clock.now()).total_seconds())
        self.clock.wait(wait, self.wake)
        self.wake.clear()
        return not self.stopping

    def install_signals(self) -> None:
        def on_term(_sig: int, _frame: object) -> None:
            if not self.stopping:
                log.info("SIGTERM: stopping (a run in progress is aborted; nothing partial is published)")
                self.stopping = True
                self.wake.set()
                raise StopRequested

        def on_hup(_sig: int, _frame: object) -> None:
            log.info("SIGHUP: reloading policies")
            self.reload_requested = True
            self.wake.set()

        signal.signal(signal.SIGTERM, on_term)
        signal.signal(signal.SIGHUP, on_hup)

    def serve(self) -> None:
        self.load(first=True)
        try:
            while self.step():
                pass
        except StopRequested:
            pass
        log.info("daemon stopped")
