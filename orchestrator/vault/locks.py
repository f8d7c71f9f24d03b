"""Vault locks: shared for backups, exclusive for garbage collection.

Mutual exclusion works on write-once storage: a process first writes its own lock object, then lists the others.
Two conflicting processes therefore always see each other, and the later checker backs off. Locks expire unless
refreshed (a killed process cannot hold the vault forever); a lock from this host whose process is gone is stale
at once. Clients on append-only storage cannot delete their lock objects: expiry makes them harmless and
provider maintenance reclaims them.
"""

from __future__ import annotations

import json
import logging
import secrets
import threading
import time
from dataclasses import dataclass

from orchestrator.errors import VaultBusy
from orchestrator.process_identity import is_gone, me
from orchestrator.vault.backend import Backend, ObjectMissing

log = logging.getLogger(__name__)

LOCK_TTL = 300.0
REFRESH_EVERY = 60.0


@dataclass
class LockInfo:
    name: str
    kind: str
    host: str
    pid: int
    purpose: str
    expires: float
    pstart: int | None = None  # the holder's start time: a reused pid is not the holder

    def live(self, now: float) -> bool:
        return self.expires >= now and not is_gone(self.host, self.pid, self.pstart)

    def describe(self) -> str:
        return f"{self.purpose} (pid {self.pid} on {self.host})"


def read_locks(backend: Backend) -> list[LockInfo]:
    out = []
    for name, _size in backend.list("locks"):
        try:
            d = json.loads(backend.get(name))
            out.append(LockInfo(name, d["kind"], d["host"], int(d["pid"]), d.get("purpose", "?"), float(d["expires"]),
                                d.get("pstart")))
        except (ObjectMissing, ValueError, KeyError):
            continue  # vanished or unreadable: an expired lock being cleaned up
    return out


class VaultLock:
    """A held lock, refreshed in the background until released."""

    def __init__(self, backend: Backend, kind: str, purpose: str) -> None:
        self.backend = backend
        self.kind = kind
        self.purpose = purpose
        self.name = ""
        self.last_refresh = time.time()
        self.stale_removed = 0  # stale locks of others removed while acquiring this one
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _write(self) -> str:
        name = "locks/" + secrets.token_hex(16)
        doc = {"kind": self.kind, **me(), "purpose": self.purpose, "time": time.time(),
               "expires": time.time() + LOCK_TTL}
        self.backend.put(name, json.dumps(doc).encode())
        return name

    def _conflicts(self) -> list[LockInfo]:
        """Live locks that conflict with ours; stale ones (expired, or of a dead process of this host) are
        removed on the way, so a killed command's lock does not linger until the next maintenance."""
        now = time.time()
        others = []
        for lk in read_locks(self.backend):
            if lk.name == self.name:
                continue
            if lk.live(now):
                others.append(lk)
            else:
                log.info("removing stale vault lock of %s", lk.describe())
                if self._remove(lk.name):
                    self.stale_removed += 1
        if self.kind == "exclusive":
            return others
        return [lk for lk in others if lk.kind == "exclusive"]

    def acquire(self, wait: float = 0.0) -> VaultLock:
        deadline = time.monotonic() + wait
        while True:
            self.name = self._write()
            self.last_refresh = time.time()
            conflicts = self._conflicts()
            if not conflicts:
                break
            self._remove(self.name)
            if time.monotonic() >= deadline:
                who = ", ".join(c.describe() for c in conflicts)
                raise VaultBusy(f"vault at {self.backend.location} is in use by {who}")
            time.sleep(min(1.0, max(0.05, deadline - time.monotonic())))
        self._thread = threading.Thread(target=self._refresh_loop, name="vault-lock", daemon=True)
        self._thread.start()
        log.debug("vault lock %s taken (%s: %s)", self.name, self.kind, self.purpose)
        return self

    def _refresh_loop(self) -> None:
        while not self._stop.wait(REFRESH_EVERY):
            try:
                old, self.name = self.name, self._write()
                self.last_refresh = time.time()
                self._remove(old)
            except Exception as e:  # keep the old lock; it expires on its own
                log.warning("could not refresh vault lock: %s", e)

    def _remove(self, name: str) -> bool:
        try:
            self.backend.delete(name)
            return True
        except (ObjectMissing, PermissionError, OSError):
            return False  # append-only storage: the lock expires instead

    def release(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join()
        if self.name:
            self._remove(self.name)
            log.debug("vault lock %s released", self.name)
            self.name = ""

    def __enter__(self) -> VaultLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
