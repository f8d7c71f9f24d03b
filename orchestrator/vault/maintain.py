"""Provider-side maintenance of a vault, run on the vault host where clients are append-only: apply the client's
retention (forget + reclaim space), remove expired lock objects and the incomplete objects that interrupted
uploads left (clients cannot delete them), and verify. Everything that deletes runs under the exclusive lock,
so a backup in progress is never disturbed (the work is then deferred to the next maintenance)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

from orchestrator.errors import IntegrityError, VaultBusy
from orchestrator.vault.backend import ObjectLocked, ObjectMissing
from orchestrator.vault.locks import read_locks
from orchestrator.vault.pack import pack_path
from orchestrator.vault.prune import PruneReport, account_for_references, prune
from orchestrator.vault.repository import LAYOUT, Vault
from orchestrator.vault.verify import verify_vault

log = logging.getLogger(__name__)


@dataclass
class MaintenanceReport:
    prune: dict | None = None
    locks_removed: int = 0
    incomplete_removed: list[str] = field(default_factory=list)
    #: packs indexed again from their own headers (their index object was damaged or never written)
    reindexed_packs: int = 0
    #: why undecodable objects were kept: they could not be proved to hold nothing a snapshot needs
    refused: str | None = None
    deferred: str | None = None
    verify: dict | None = None

    def to_json(self) -> dict:
        return asdict(self)


def maintain(vault: Vault, retention: dict | None = None, names: Callable[[str], bool] | None = None,
             verify: bool = False) -> MaintenanceReport:
    rep = MaintenanceReport()
    now = time.time()
    make_layout = getattr(vault.backend, "make_layout", None)
    if make_layout is not None:  # a vault made before damage records: clients cannot create the directory
        make_layout(LAYOUT)
    try:
        lock = vault.lock("exclusive", "provider maintenance", wait=0)
    except VaultBusy as e:
        rep.deferred = str(e)
    else:
        rep.locks_removed = lock.stale_removed
        try:
            for lk in read_locks(vault.backend):
                if lk.name != lock.name and not lk.live(now):
                    _delete(vault, lk.name)
                    rep.locks_removed += 1
            rep.incomplete_removed = _remove_incomplete(vault, rep)
        finally:
            lock.release()
    if retention:  # after the clean-up: reclaiming space writes a consolidated index first, which needs room
        pr: PruneReport = prune(vault, None, False, retention, names)
        rep.prune = pr.to_json()
    if verify:
        rep.verify = verify_vault(vault).to_json()
    return rep


def _remove_incomplete(vault: Vault, rep: MaintenanceReport) -> list[str]:
    """Index objects that do not decode, and unindexed packs whose header does not parse: what uploads cut
    short left behind (no backup runs: we hold the exclusive lock). An undecodable index object may also be a
    damaged one that described live packs, so first every pack it could have described is indexed again from
    the pack's own header, and nothing is deleted unless every chunk every snapshot references is located."""
    index = vault.load_index(refresh=True)
    vault.index_from_headers(index)
    if not index.damaged and not index.unreadable:
        if index.from_headers:
            rep.reindexed_packs = vault.adopt_unindexed_packs(index)
        return []
    try:
        account_for_references(vault, index, vault.pack_names())
    except IntegrityError as e:
        rep.refused = str(e)
        log.error("maintenance kept %d undecodable index object(s) and %d unreadable pack(s): %s",
                  len(index.damaged), len(index.unreadable), e)
        return []
    if index.from_headers:  # written before anything is deleted: the packs stay described at every step
        rep.reindexed_packs = vault.adopt_unindexed_packs(index)
    removed = []
    for name in index.damaged:
        _delete(vault, name)
        removed.append(name)
    for pack in index.unreadable:
        _delete(vault, pack_path(pack))
        removed.append(pack_path(pack))
    vault.forget_index()
    return removed


def _delete(vault: Vault, name: str) -> None:
    try:
        vault.backend.delete(name)
    except ObjectMissing:
        pass
    except ObjectLocked as e:  # harmless where it is; a later run deletes it once the lock ends
        log.info("kept for now: %s", e)
