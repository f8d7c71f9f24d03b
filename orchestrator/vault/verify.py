"""Verify: re-read and authenticate everything, and say exactly which snapshot, item and offset is damaged."""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field

from orchestrator.errors import DobaasError, IntegrityError
from orchestrator.vault.backend import ObjectMissing
from orchestrator.vault.crypto import content_hash
from orchestrator.vault.damage import write_record
from orchestrator.vault.index import Index
from orchestrator.vault.pack import PackEntry, pack_path
from orchestrator.vault.repository import Vault
from orchestrator.vault.snapshot import item_meta_ids, item_refs_located


@dataclass
class Damage:
    snapshot: str | None
    name: str | None
    item: str | None
    offset: int | None
    length: int | None
    reason: str
    path: str | None = None  # the file, for tree items (offset and length are then within that file)


@dataclass
class VerifyReport:
    ok: bool = True
    snapshots: int = 0
    snapshots_damaged: int = 0
    packs_checked: int = 0
    chunks_checked: int = 0
    bytes_checked: int = 0
    orphan_packs: int = 0
    #: index objects that do not decode (an interrupted upload on append-only storage, or damage): ignored, since
    #: every snapshot is checked through the packs themselves; provider maintenance removes them
    incomplete_objects: list[str] = field(default_factory=list)
    damage: list[Damage] = field(default_factory=list)
    #: damaged chunks found by this verify and recorded in the vault (orchestrator.vault.damage), so the next
    #: backup that meets the same data stores it again; ``record_error`` when the vault refused the record
    chunks_recorded: int = 0
    record_error: str | None = None
    #: chunks known damaged with no good copy yet (recorded earlier)
    chunks_quarantined: int = 0
    #: packs holding damaged copies already superseded by good ones: healed, rewritten by the next prune or
    #: maintenance; not damage
    packs_with_superseded_copies: list[str] = field(default_factory=list)

    def to_json(self) -> dict:
        d = asdict(self)
        d["damage"] = [asdict(x) for x in self.damage]
        return d


def _check_pack(
    vault: Vault, pack: str, entries: list[PackEntry], size: int | None
) -> tuple[dict[bytes, str], int, str | None]:
    """Return (bad chunk id -> reason, bytes read, pack-level problem) for one pack."""
    what = f"pack {pack[:12]}"
    missing = {e.id: f"{what} is missing" for e in entries}
    if size is None:
        return missing, 0, None
    try:
        data = vault.backend.get(pack_path(pack))
    except ObjectMissing:
        return missing, 0, None
    bad: dict[bytes, str] = {}
    view = memoryview(data)
    for e in entries:
        if e.offset + e.length > len(data):
            bad[e.id] = f"{what} is truncated"
            continue
        try:
            vault.decoder.decode(view[e.offset : e.offset + e.length], e, what)
        except IntegrityError as err:
            bad[e.id] = str(err)
    problem = None
    if not bad and content_hash(data) != pack:
        # every indexed chunk is intact, so the damage is in the pack header: the index still reads it
        problem = f"{what}: header area damaged (chunks intact)"
    return bad, len(data), problem


def _record(vault: Vault, index: Index, bad: dict[bytes, str], bad_in: dict[bytes, str],
            rep: VerifyReport) -> None:
    """Record the damaged chunks not yet recorded, so the vault heals (see orchestrator.vault.damage)."""
    new = {cid: (bad_in[cid], why) for cid, why in bad.items()
           if bad_in[cid] not in index.damage_records.get(cid, {})}
    if not new:
        return
    try:
        write_record(vault.backend, vault.cipher, new)
        rep.chunks_recorded = len(new)
    except (OSError, DobaasError) as e:
        rep.record_error = f"the damage could not be recorded in the vault ({e}); backups will not heal it"


def verify_vault(vault: Vault, read_data: bool = True, progress: Callable[[int], None] | None = None,
                 workers: int = 2, record: bool = True) -> VerifyReport:
    rep = VerifyReport()
    # map pieces are read through this index; packs no readable index object describes are checked through
    # their own headers, as every reader does
    index = vault.load_index(refresh=True)
    vault.index_from_headers(index)
    rep.incomplete_objects = [f"{name}: {why}" for name, why in index.damaged.items()]
    sizes = vault.pack_names()
    rep.orphan_packs = len(index.from_headers) + len(index.unreadable)
    bad: dict[bytes, str] = {}
    bad_in: dict[bytes, str] = {}  # chunk id -> the pack of its damaged copy
    lock = threading.Lock()

    def check(item: tuple[str, list[PackEntry]]) -> None:
        pack, entries = item
        if read_data:
            pbad, nbytes, problem = _check_pack(vault, pack, entries, sizes.get(pack))
        else:
            pbad = {e.id: f"pack {pack[:12]} is missing" for e in entries} if pack not in sizes else {}
            nbytes, problem = 0, None
        with lock:
            if problem and pack not in index.superseded:  # (a superseded bad copy also changes the pack's hash)
                rep.damage.append(Damage(None, None, None, None, None, problem))
            bad.update(pbad)
            bad_in.update(dict.fromkeys(pbad, pack))
            rep.packs_checked += 1
            rep.chunks_checked += len(entries)
            rep.bytes_checked += nbytes
        if progress:
            progress(nbytes)

    with ThreadPoolExecutor(max_workers=workers) as pool:
        list(pool.map(check, index.by_pack().items()))
    rep.packs_with_superseded_copies = sorted(p for p in index.superseded if p in sizes)
    rep.chunks_quarantined = len(index.quarantined)
    if record:
        _record(vault, index, bad, bad_in, rep)

    def read_meta(cid: bytes) -> bytes:
        if cid in bad:
            raise IntegrityError(bad[cid])
        return vault.read_chunk(cid, "block map")

    snaps, broken = vault.list_snapshots()
    rep.snapshots = len(snaps) + len(broken)
    for sid, err in broken:
        rep.damage.append(Damage(sid, None, None, None, None, err))
    rep.snapshots_damaged = len(broken)
    for snap in snaps:
        found = 0
        for item in snap.items:
            try:
                for cid in item_meta_ids(item):
                    if cid not in index:
                        raise IntegrityError(f"block map chunk {cid.hex()[:12]} is missing")
                run: Damage | None = None
                for offset, length, cid, path in item_refs_located(item, read_meta):
                    reason = bad.get(cid) or (None if cid in index else index.quarantined.get(cid)
                                              or f"chunk {cid.hex()[:12]} is missing")
                    if reason is None:
                        run = None
                        continue
                    found += 1
                    if (run and run.reason == reason and run.path == path
                            and run.offset + run.length == offset):  # type: ignore[operator]
                        run.length += length  # type: ignore[operator]
                    else:
                        run = Damage(snap.id, snap.name, item["name"], offset, length, reason, path)
                        rep.damage.append(run)
            except IntegrityError as e:
                found += 1
                rep.damage.append(Damage(snap.id, snap.name, item["name"], None, None, f"item unreadable: {e}"))
        if found:
            rep.snapshots_damaged += 1
    rep.ok = not rep.damage
    return rep
