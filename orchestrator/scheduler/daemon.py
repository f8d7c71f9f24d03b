"""Run every policy of a directory on its cron schedule (``schedule:``, local time).

- Catch-up: a run missed while the daemon was down (a scheduled time between the policy's last job in the
  catalog and now) runs once at start; optional.
- After a run in which every source saved a snapshot, the policy's retention is applied to its sources.
- SIGHUP reloads the policies; SIGTERM stops: runs in progress are aborted at their next chunk (the vault
  publishes nothing partial, and the next run reuses what was stored), then the daemon exits.
- Up to ``max_concurrent`` policies run at once (each in its own thread; one at a time in the main thread by
  default). A policy never runs twice at once, and a policy waits while another one backing up one of the same
  sources (same client and source name) runs, so two runs of a source never overlap.
"""

from __future__ import annotations

import glob
import logging
import os
import signal
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from orchestrator.backup.abort import AbortSignal
from orchestrator.errors import DobaasError
from orchestrator.policy.model import Policy, load_policy, next_time
from orchestrator.policy.window import window_state
from orchestrator.scheduler.clock import Clock, FakeClock, RealClock

log = logging.getLogger(__name__)

Runner = Callable[[Policy, str, list[str] | None, AbortSignal], object]
CHECK_EVERY = 3600.0  # the daemon wakes at least hourly for its periodic checks
LastRun = Callable[[Policy], datetime | None]
#: the longest wait before a retry, whatever the policy's delay and attempt count (3**20 minutes overflows)
MAX_RETRY_DELAY = 7 * 24 * 3600.0


class StopRequested(BaseException):
    """Raised in the main thread by SIGTERM to abort a run in progress (BaseException: not swallowed as an
    ordinary error by a source's error handling)."""


@dataclass
class Entry:
    policy: Policy
    next_run: datetime
    retry_at: datetime | None = None  # a retry of the sources that failed, with backoff
    retry_sources: list[str] = field(default_factory=list)
    attempts: int = 0

    def due(self) -> datetime:
        return min(self.next_run, self.retry_at) if self.retry_at else self.next_run


@dataclass
class Scheduler:
    directory: str
    runner: Runner
    clock: Clock = field(default_factory=RealClock)
    last_run: LastRun = lambda _policy: None
    catch_up: bool = True
    run_now: bool = False
    #: called once per loop with the loaded policies (the daemon's periodic checks: sources without success)
    on_tick: Callable[[list[Policy]], None] | None = None
    entries: dict[str, Entry] = field(default_factory=dict)
    wake: threading.Event = field(default_factory=threading.Event)
    stopping: bool = False
    reload_requested: bool = False
    max_concurrent: int = 1
    #: policy name -> (thread or None when run in the main thread, its abort signal)
    running: dict[str, tuple[threading.Thread | None, AbortSignal]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

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
            try:
                found[p.policy] = Entry(p, self._first_run(p, now, first))
            except Exception as e:  # a schedule that never comes round: this policy is skipped, never the daemon
                log.error("policy %s ignored: cannot compute its next run (%s: %s)", path, type(e).__name__, e)
        self.entries = found
        log.info("loaded %d scheduled policies from %s", len(found), self.directory)

    def _first_run(self, p: Policy, now: datetime, first: bool) -> datetime:
        if first and self.run_now:
            return now
        old = self.entries.get(p.policy)
        if old is not None and old.policy.schedule == p.schedule:
            return old.next_run
        assert p.schedule is not None
        if first and self.catch_up:
            try:
                last = self.last_run(p)
            except Exception as e:  # the policy's catalog cannot be read: no catch-up, said in the log
                log.error("policy %s: no catch-up, its last run could not be read from its catalog (%s)", p.policy, e)
                last = None
            if last is not None:
                missed = next_time(p.schedule, last.astimezone(now.tzinfo))
                if missed is not None and missed <= now:
                    log.info("policy %s missed its run of %s: catching up now", p.policy, missed)
                    return now
        nxt = next_time(p.schedule, now)
        if nxt is None:
            raise DobaasError(f"the schedule {p.schedule!r} never comes round")
        return nxt

    def step(self) -> bool:
        """Run what is due, then wait for the next due time (or a wake-up: a run ended, a signal). Returns False
        once stopping."""
        self.wake.clear()  # cleared before looking, so a wake-up while we look is not lost
        if self.reload_requested:
            self.reload_requested = False
            self.load()
        now = self.clock.now()
        for name, entry in sorted(self.entries.items(), key=lambda kv: kv[1].due()):
            if self.stopping:
                return False
            if entry.next_run <= now and entry.policy.window:
                inside, _end, next_start = window_state(entry.policy.window, now)
                if not inside:
                    log.info("policy %s is due but outside its window %s: waiting until %s", name,
                             entry.policy.window, next_start)
                    entry.next_run = next_start
                    continue
            due_run = entry.next_run <= now
            due_retry = not due_run and entry.retry_at is not None and entry.retry_at <= now
            if not (due_run or due_retry) or not self._may_start(entry):
                continue
            if due_run:
                log.info("running policy %s (due %s)", name, entry.next_run)
                entry.attempts, entry.retry_at, entry.retry_sources = 0, None, []
                assert entry.policy.schedule is not None
                nxt = next_time(entry.policy.schedule, now)
                if nxt is None:
                    log.error("policy %s: its schedule never comes round again; it runs now, then no more", name)
                    nxt = datetime.max.replace(tzinfo=now.tzinfo)
                entry.next_run = nxt
                self._start(entry, "schedule", None)
            else:
                log.info("retrying policy %s sources %s (attempt %d)", name, ", ".join(entry.retry_sources),
                         entry.attempts)
                entry.retry_at = None
                self._start(entry, "retry", entry.retry_sources)
        if self.stopping:
            return False
        if self.on_tick:
            self.on_tick([e.policy for e in self.entries.values()])
        wait = CHECK_EVERY
        now = self.clock.now()
        # a due policy that could not start (slots full, a source busy) starts when a run ends: that wakes us
        upcoming = [e.due() for e in self.entries.values() if e.due() > now]
        if upcoming:
            wait = min(wait, (min(upcoming) - now).total_seconds())
        self.clock.wait(wait, self.wake)
        return not self.stopping

    def _sources(self, policy: Policy) -> set[str]:
        return {f"{policy.client}/{c.name}" for c in policy.source_configs}

    def _may_start(self, entry: Entry) -> bool:
        """A free slot, the policy not running, and none of its sources in a running policy."""
        with self._lock:
            if entry.policy.policy in self.running or len(self.running) >= self.max_concurrent:
                return False
            mine = self._sources(entry.policy)
            for other in self.running:
                e = self.entries.get(other)
                if e is not None and mine & self._sources(e.policy):
                    log.info("policy %s waits: policy %s is backing up one of its sources", entry.policy.policy,
                             other)
                    return False
        return True

    def _start(self, entry: Entry, trigger: str, only: list[str] | None) -> None:
        abort = AbortSignal()
        if self.max_concurrent <= 1:  # in the main thread: the tests' fake clock sees the run complete
            with self._lock:
                self.running[entry.policy.policy] = (None, abort)
            self._run(entry, trigger, only, abort)
            return
        t = threading.Thread(target=self._run, args=(entry, trigger, only, abort), daemon=True,
                             name=f"policy-{entry.policy.policy}")
        with self._lock:
            self.running[entry.policy.policy] = (t, abort)
        t.start()

    def _run(self, entry: Entry, trigger: str, only: list[str] | None, abort: AbortSignal) -> None:
        try:
            self._run_once(entry, trigger, only, abort)
        except StopRequested:
            log.info("policy %s stopped before it finished; nothing partial was published", entry.policy.policy)
        finally:
            with self._lock:
                self.running.pop(entry.policy.policy, None)
            self.wake.set()

    def _run_once(self, entry: Entry, trigger: str, only: list[str] | None, abort: AbortSignal) -> None:
        failed: list[str] = []
        try:
            report = self.runner(entry.policy, trigger, only, abort)
            failed = [s.source for s in getattr(report, "sources", []) if s.status == "failed"]
        except DobaasError as e:  # the whole policy could not run (vault missing, passphrase…)
            log.error("policy %s failed: %s", entry.policy.policy, e)
            failed = only or [c.name for c in entry.policy.source_configs]
        except Exception as e:  # whatever a policy or a plugin raises, the daemon goes on with the others
            log.error("policy %s failed with an internal error: %s: %s", entry.policy.policy, type(e).__name__, e,
                      exc_info=True)
            failed = only or [c.name for c in entry.policy.source_configs]
        retry = entry.policy.retry
        if failed and entry.attempts < retry.attempts:
            delay = min(retry.delay_minutes * 60 * 3**entry.attempts, MAX_RETRY_DELAY)
            entry.attempts += 1
            entry.retry_at = self.clock.now() + timedelta(seconds=delay)
            entry.retry_sources = failed
            log.info("policy %s: %s will be retried at %s", entry.policy.policy, ", ".join(failed), entry.retry_at)
        else:
            if failed:
                log.error("policy %s: %s still failing after %d retries", entry.policy.policy, ", ".join(failed),
                          entry.attempts)
            entry.retry_at, entry.retry_sources = None, []

    def install_signals(self) -> None:
        def on_term(_sig: int, _frame: object) -> None:
            if not self.stopping:
                log.info("SIGTERM: stopping (runs in progress are aborted; nothing partial is published)")
                self.stop()

        def on_hup(_sig: int, _frame: object) -> None:
            log.info("SIGHUP: reloading policies")
            self.reload_requested = True
            self.wake.set()

        signal.signal(signal.SIGTERM, on_term)
        signal.signal(signal.SIGHUP, on_hup)

    def stop(self) -> None:
        """Stop: every run in progress stops at its next chunk boundary."""
        self.stopping = True
        with self._lock:
            aborts = [a for _t, a in self.running.values()]
        for a in aborts:
            a.fire(lambda: StopRequested("the daemon is stopping"))
        self.wake.set()

    def serve(self) -> None:
        self.load(first=True)
        while self.step():
            pass
        with self._lock:
            threads = [t for t, _a in self.running.values() if t is not None]
        for t in threads:
            t.join()
        log.info("daemon stopped")


def next_runs(directory: str, now: datetime | None = None) -> dict[str, str]:
    """{policy name: ISO time of its next scheduled run} for the policies of a directory (windows respected)."""
    sched = Scheduler(directory, lambda *_a: None, catch_up=False)
    if now is not None:
        sched.clock = FakeClock(now)  # load() only reads the time
    sched.load()
    out = {}
    for name, e in sched.entries.items():
        t = e.next_run
        if e.policy.window:
            inside, _end, start = window_state(e.policy.window, t)
            t = t if inside else start
        out[name] = t.isoformat()
    return out

