"""One backup run against a vault: takes the shared lock, adopts what an interrupted run left, finds the
parent snapshot, and publishes the new snapshot only when everything it references is stored."""

from __future__ import annotations

import logging
import socket
import time
from types import TracebackType

from orchestrator.backup.abort import AbortSignal
from orchestrator.errors import BadInput, IntegrityError
from orchestrator.vault.repository import Vault
from orchestrator.vault.snapshot import Item, Snapshot, item_meta_ids, item_refs, name_problem
from orchestrator.vault.writer import BackupWriter

log = logging.getLogger(__name__)

DEFAULT_LOCK_WAIT = 300.0


class BackupSession:
    def __init__(self, vault: Vault, name: str, lock_wait: float = DEFAULT_LOCK_WAIT, uploaders: int = 2,
                 abort: AbortSignal | None = None) -> None:
        problem = name_problem(name)
        if problem:
            raise BadInput(problem)
        self.vault = vault
        self.abort = abort
        self.name = name
        self.lock_wait = lock_wait
        self.uploaders = uploaders
        self.started = time.monotonic()
        self.parent: Snapshot | None = None
        self.warnings: list[str] = []
        self.snapshot: Snapshot | None = None

    def __enter__(self) -> BackupSession:
        self.lock = self.vault.lock("shared", f"backup of {self.name}", self.lock_wait)
        try:
            self.parent = self.vault.latest(self.name)
            self.vault.forget_index()  # read afresh, when first needed: see BackupWriter.index
            self.writer = BackupWriter(self.vault, self.lock, self.uploaders,
                                       self.abort.check if self.abort is not None else None,
                                       self.vault.load_index_adopting)
        except BaseException:
            self.lock.release()
            raise
        return self

    def parent_item(self, item_name: str) -> Item | None:
        return self.parent.item(item_name) if self.parent else None

    def commit(self, items: list[Item], meta: dict | None = None, extra_stats: dict | None = None) -> Snapshot:
        snap = Snapshot(
            name=self.name,
            items=items,
            hostname=socket.gethostname(),
            parent=self.parent.id if self.parent else None,
            meta=meta or {},
        )
        self.writer.flush()  # packs ship asynchronously: their figures are complete only once all are stored
        self._warn_of_damage(items)
        w = self.writer.stats
        snap.stats = {
            "chunks_new": w.chunks_new,
            "chunks_reused": w.chunks_reused,
            "raw_bytes_new": w.raw_bytes_new,
            "bytes_stored": w.bytes_written,  # packs written by this backup (index and manifest not counted)
            "seconds": round(time.monotonic() - self.started, 3),
            "warnings": self.warnings,
            **(extra_stats or {}),
        }
        self.writer.commit(snap)
        self.snapshot = snap
        return snap

    def _warn_of_damage(self, items: list[Item]) -> None:
        """Say so when the new snapshot still uses chunks recorded as damaged (what a plugin carries over from
        earlier snapshots, or data its source no longer has): it would otherwise look whole."""
        index = self.writer.index
        if not index.quarantined:
            return
        ids = {cid for item in items for cid in item_meta_ids(item)}
        for item in items:
            try:
                ids.update(cid for _o, _l, cid in item_refs(item, lambda c: self.vault.read_chunk(c, "map")))
            except IntegrityError:
                pass  # its map uses a damaged chunk: counted below through item_meta_ids_all
        still = [cid for cid in ids if cid in index.quarantined and cid not in index]
        if still:
            w = (f"this snapshot still uses {len(still)} chunk(s) recorded as damaged (data the source did not "
                 "provide again: carried over from earlier snapshots, or no longer the same at the source); a full "
                 "backup of the source repairs what it still has")
            self.warnings.append(w)
            log.warning("%s: %s", self.name, w)

    def __exit__(self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        try:
            if self.snapshot is None and hasattr(self, "writer"):
                self.writer.abort()
        finally:
            self.lock.release()
