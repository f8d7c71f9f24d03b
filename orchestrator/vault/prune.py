"""Retention and garbage collection.

``forget`` only deletes snapshot manifests, which is always safe. ``collect_garbage`` needs the exclusive lock
(no backup may be running, since a backup may deduplicate against any chunk); when a backup holds the vault it
is deferred, never forced. Order of deletions keeps the vault readable at every step: new packs (repacked live
chunks) and a new consolidated index are written first, then old index objects go, then dead packs.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime

from orchestrator.errors import AppendOnly, IntegrityError, VaultBusy
from orchestrator.vault.backend import ObjectLocked, ObjectMissing
from orchestrator.vault.crypto import AAD_PACK_HEADER, content_hash
from orchestrator.vault.index import Index, encode_index
from orchestrator.vault.pack import HEADER_MAGIC, TRAILER, PackEntry, encode_entries, pack_path
from orchestrator.vault.repository import Vault
from orchestrator.vault.snapshot import Snapshot, item_meta_ids, item_refs

log = logging.getLogger(__name__)

REPACK_THRESHOLD = 0.25  # rewrite a pack when more than this share of its bytes is unreferenced


GFS_RULES = ("keep_hourly", "keep_daily", "keep_weekly", "keep_monthly", "keep_yearly")


def _bucket(rule: str, when: datetime) -> tuple:
    local = when.astimezone()
    if rule == "keep_hourly":
        return (local.year, local.month, local.day, local.hour)
    if rule == "keep_daily":
        return (local.year, local.month, local.day)
    if rule == "keep_weekly":
        return local.isocalendar()[:2]
    if rule == "keep_monthly":
        return (local.year, local.month)
    return (local.year,)


def select_retention(snapshots: list[Snapshot], retention: dict) -> tuple[list[Snapshot], list[Snapshot], dict]:
    """Grandfather-father-son retention, per snapshot name, as restic and borg users expect: ``keep_last``
    newest snapshots, plus the newest snapshot of each of the last N hours / days / ISO weeks / months / years
    that have snapshots (local time). A snapshot is kept when any rule keeps it. No rule at all keeps
    everything: retention never deletes a whole history by omission. Returns (keep, remove, reasons by id)."""
    rules = {k: v for k, v in retention.items() if v}
    groups: dict[str, list[Snapshot]] = defaultdict(list)
    for s in snapshots:
        groups[s.name].append(s)
    keep: list[Snapshot] = []
    remove: list[Snapshot] = []
    reasons: dict[str, list[str]] = {}
    for group in groups.values():
        group.sort(key=lambda s: (s.time, s.id), reverse=True)
        if not rules:
            keep += group
            continue
        why: dict[str, list[str]] = defaultdict(list)
        for s in group[: rules.get("keep_last", 0)]:
            why[s.id].append("last")
        for rule in GFS_RULES:
            n = rules.get(rule, 0)
            seen: set[tuple] = set()
            for s in group:
                if len(seen) >= n:
                    break
                b = _bucket(rule, s.datetime)
                if b not in seen:
                    seen.add(b)
                    why[s.id].append(rule.removeprefix("keep_"))
        for s in group:
            (keep if s.id in why else remove).append(s)
        reasons.update({k: v for k, v in why.items()})
    return keep, remove, reasons


def forget(vault: Vault, snaps: list[Snapshot]) -> list[str]:
    """Delete the snapshots' manifests. Returns those object storage still holds under Object Lock: they stay
    whole (their data is still referenced) until a later run after the lock ends."""
    held = []
    for s in snaps:
        try:
            vault.backend.delete(f"snapshots/{s.id}")
        except ObjectMissing:
            pass
        except ObjectLocked as e:
            held.append(s.id)
            log.info("snapshot %s (%s, %s) kept for now: %s", s.id[:12], s.name, s.time, e)
            continue
        log.info("forgot snapshot %s (%s, %s)", s.id[:12], s.name, s.time)
    return held


@dataclass
class GcReport:
    ran: bool = False
    deferred_reason: str = ""
    packs_deleted: int = 0
    packs_repacked: int = 0
    orphan_packs_deleted: int = 0
    chunks_deleted: int = 0
    bytes_freed: int = 0
    #: objects Object Lock retention kept from deletion this time (deleted by a later run)
    held_by_lock: int = 0


def account_for_references(vault: Vault, index: Index, sizes: dict[str, int] | None,
                           ignore: set[str] = frozenset()) -> set[bytes]:  # type: ignore[assignment]
    """Every chunk some snapshot references, after checking that each one is located by ``index`` in a pack
    that exists (``sizes``, when given). Raises IntegrityError, naming the snapshots, when any is not: nothing
    may be deleted then, since a pack that looks unreferenced may hold what the damaged part described."""
    snaps, broken = vault.list_snapshots()
    snaps = [s for s in snaps if s.id not in ignore]
    if broken:
        raise IntegrityError(
            f"snapshot {broken[0][0][:12]} has a damaged manifest; garbage collection would be unsafe ({broken[0][1]})"
        )
    refs: set[bytes] = set()
    lost: list[str] = []
    for s in snaps:
        mine: set[bytes] = set()
        try:
            for item in s.items:
                mine.update(item_meta_ids(item))
                mine.update(cid for _o, _l, cid in item_refs(item, lambda c: vault.read_chunk(c, "block map")))
        except IntegrityError as e:
            lost.append(f"{s.id[:12]} ({s.name}): {e}")
            continue
        missing = [c for c in mine if c not in index.quarantined  # known damaged: accounted for, not lost
                   and ((loc := index.get(c)) is None or (sizes is not None and loc.pack not in sizes))]
        if missing:
            lost.append(f"{s.id[:12]} ({s.name}): {len(missing)} chunk(s) not located in any pack")
        refs |= mine
    if lost:
        raise IntegrityError(
            f"garbage collection refused, nothing was deleted: {len(lost)} snapshot(s) reference data that no "
            f"readable index or pack header accounts for — {'; '.join(lost[:3])}"
            f"{' …' if len(lost) > 3 else ''}; run 'dobaas verify' and forget the damaged snapshots first"
        )
    return refs


def collect_garbage(vault: Vault, dry_run: bool = False, ignore: set[str] = frozenset(),  # type: ignore[assignment]
                    repack_threshold: float = REPACK_THRESHOLD) -> GcReport:
    """Delete what no snapshot references; packs with more than ``repack_threshold`` of dead bytes are
    rewritten without them (0: every pack holding any dead chunk, so none of it remains: tenant destruction)."""
    rep = GcReport()
    try:
        lock = vault.lock("exclusive", "garbage collection", wait=0)
    except VaultBusy as e:
        rep.deferred_reason = str(e)
        return rep
    try:
        _collect(vault, rep, dry_run, ignore, repack_threshold)
    finally:
        lock.release()
    return rep


def _collect(vault: Vault, rep: GcReport, dry_run: bool, ignore: set[str], repack_threshold: float) -> None:
    index = vault.load_index(refresh=True)
    # packs no readable index object describes are read from their own headers: one damaged index object must
    # not make a live pack look like an orphan
    vault.index_from_headers(index)
    sizes = vault.pack_names()
    refs = account_for_references(vault, index, sizes, ignore)
    packs = index.by_pack()
    # a pack holding the only (damaged) copy of a chunk is kept as it is while that chunk is quarantined: a
    # technician may still salvage it, and it costs one pack
    keep_as_is = {p for cid in index.quarantined for p in index.damage_records.get(cid, {})}
    dead_packs, repack = [], []
    for pack, entries in packs.items():
        if pack in keep_as_is:
            continue
        live = [e for e in entries if e.id in refs]
        if not live:
            dead_packs.append(pack)
        else:
            dead_bytes = sum(e.length for e in entries if e.id not in refs)
            if dead_bytes > repack_threshold * sizes.get(pack, 1) or pack in index.superseded:
                repack.append(pack)  # (a superseded damaged copy: rewritten without it)
    # packs every chunk of which resolves to a copy elsewhere (duplicates, superseded damaged copies): redundant
    dead_packs += [p for p in index.packs if p not in packs and p in sizes and p not in keep_as_is]
    orphans = [p for p in sizes if p not in index.packs]  # headers unreadable, and nothing kept needs them
    rep.ran = True
    rep.packs_deleted = len(dead_packs)
    rep.packs_repacked = len(repack)
    rep.orphan_packs_deleted = len(orphans)
    rep.chunks_deleted = sum(1 for cid in index.chunks if cid not in refs)
    rep.bytes_freed = sum(sizes.get(p, 0) for p in dead_packs + repack + orphans)
    if dry_run:
        return
    new_index: dict[str, list[PackEntry]] = {}
    for pack, entries in packs.items():
        if pack not in dead_packs and pack not in repack:
            new_index[pack] = entries
    if repack:
        for pack, entries in _repack(vault, [(p, [e for e in packs[p] if e.id in refs]) for p in repack]):
            new_index[pack] = entries
            rep.bytes_freed -= sizes.get(pack, 0)
    old_objects = [name for name, _ in vault.backend.list("index")]
    if new_index:
        name, sealed = encode_index(vault.cipher, new_index)
        if name not in old_objects:
            vault.backend.put(name, sealed)
        old_objects = [o for o in old_objects if o != name]
    index_held = 0
    for o in old_objects:
        try:
            vault.backend.delete(o)
        except ObjectLocked:
            index_held += 1
    rep.held_by_lock = index_held
    if index_held:  # an old index object still describes the dead packs: they stay until it can go
        log.info("garbage collection: %d index object(s) under Object Lock; unreferenced packs kept until then",
                 index_held)
        rep.held_by_lock += len(dead_packs + repack + orphans)
        rep.bytes_freed = 0
    else:
        for pack in dead_packs + repack + orphans:
            try:
                vault.backend.delete(pack_path(pack))
            except ObjectMissing:
                pass
            except ObjectLocked:
                rep.held_by_lock += 1
                rep.bytes_freed -= sizes.get(pack, 0)
    remove_tmp = getattr(vault.backend, "remove_temporaries", None)
    if remove_tmp:
        remove_tmp()
    vault._index = None
    log.info("garbage collection: %s", asdict(rep))


def _repack(vault: Vault, work: list[tuple[str, list[PackEntry]]]) -> list[tuple[str, list[PackEntry]]]:
    """Copy live sealed chunks verbatim into new packs (their encryption is bound to the chunk id, not the pack)."""
    out: list[tuple[str, list[PackEntry]]] = []
    buf = bytearray()
    entries: list[PackEntry] = []

    def ship() -> None:
        nonlocal buf, entries
        if not entries:
            return
        header = vault.cipher.seal(HEADER_MAGIC + encode_entries(entries), AAD_PACK_HEADER)
        data = bytes(buf) + header + TRAILER.pack(len(header))
        name = content_hash(data)
        vault.backend.put(pack_path(name), data)
        out.append((name, entries))
        buf, entries = bytearray(), []

    for pack, live in work:
        data = vault.backend.get(pack_path(pack))
        for e in live:
            blob = data[e.offset : e.offset + e.length]
            vault.decoder.decode(blob, e, f"pack {pack[:12]}")  # never copy damage forward
            entries.append(PackEntry(e.id, e.kind, e.comp, len(buf), e.length, e.raw_length))
            buf += blob
            if len(buf) >= vault.config.pack_size:
                ship()
    ship()
    return out


@dataclass
class PruneReport:
    kept: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    reasons: dict[str, list[str]] = field(default_factory=dict)  # why each kept snapshot is kept
    gc: GcReport = field(default_factory=GcReport)
    dry_run: bool = False
    held: list[str] = field(default_factory=list)  # removed by retention, still under Object Lock (kept for now)

    def to_json(self) -> dict:
        return asdict(self)


def prune(vault: Vault, keep_last: int | None = None, dry_run: bool = False, retention: dict | None = None,
          names: Callable[[str], bool] | None = None) -> PruneReport:
    """Apply ``keep_last`` (or a full ``retention``) to the snapshots (only those whose name ``names`` accepts,
    when given), then collect garbage."""
    snaps, _broken = vault.list_snapshots()
    if names is not None:
        snaps = [s for s in snaps if names(s.name)]
    keep, remove, why = select_retention(snaps, retention if retention is not None else {"keep_last": keep_last})
    rep = PruneReport([s.id for s in keep], [s.id for s in remove], why, dry_run=dry_run)
    try:
        if not dry_run:
            rep.held = forget(vault, remove)
            rep.removed = [i for i in rep.removed if i not in rep.held]
        rep.gc = collect_garbage(vault, dry_run, set(rep.removed) if dry_run else set())
    except PermissionError:
        raise AppendOnly(
            f"the vault at {vault.backend.location} refuses deletions (append-only access, as client access to a "
            "provider's vault is): retention is applied on the provider side by 'dobaas vault maintain --policy "
            "FILE'; nothing was deleted here") from None
    return rep
