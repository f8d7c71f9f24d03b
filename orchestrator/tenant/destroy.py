"""End of contract: every object of a client deleted from every vault that holds it, its keys destroyed, its
catalog rows and local caches removed, and a record of each step for the destruction certificate.

A vault that holds only this client's snapshots is deleted whole, its key objects and config last (without
them nothing left anywhere decrypts: crypto-shredding); a marker object written first lets an interrupted
destruction resume although the vault no longer opens. In a vault shared with other clients, the client's
snapshots are forgotten and every pack holding any of their data is rewritten or deleted (nothing of it
stays), the vault's keys stay (the other clients need them). Objects still under Object Lock retention cannot
be deleted before it ends: they are reported as scheduled, and the same command run after that date finishes."""

from __future__ import annotations

import glob
import logging
import os
import shutil
from dataclasses import asdict, dataclass, field

from orchestrator.cachedir import cache_root
from orchestrator.cbt.listing_cache import ListingCache
from orchestrator.cbt.listing_cache import default_dir as listing_dir
from orchestrator.errors import DobaasError
from orchestrator.vault.backend import Backend, ObjectLocked, ObjectMissing
from orchestrator.vault.prune import collect_garbage, forget
from orchestrator.vault.repository import Vault

log = logging.getLogger(__name__)
MARKER = "destroying"  # written first in a vault being destroyed whole: names the client


@dataclass
class VaultDestruction:
    location: str
    vault_id: str = ""
    mode: str = ""  # whole vault | shared vault | nothing here
    snapshots_deleted: int = 0
    snapshot_ids: list[str] = field(default_factory=list)
    objects_deleted: int = 0
    bytes_deleted: int = 0
    keys_destroyed: bool = False
    remaining_objects: int = 0  # of this client, still in the vault (scheduled ones included)
    scheduled: list[dict] = field(default_factory=list)  # {retained_until, objects, bytes}
    local_caches_removed: int = 0

    def to_json(self) -> dict:
        return asdict(self)


def owner(name: str) -> str:
    return name.split("/", 1)[0]


def _last(name: str) -> int:
    """Deletion order of a whole vault: data first, then keys, the config, and the marker last."""
    return 3 if name == MARKER else 2 if name == "config" else 1 if name.startswith("keys/") else 0


def destroy_vault(backend: Backend, passphrase: str, client: str, dry_run: bool) -> VaultDestruction:
    rep = VaultDestruction(location=backend.location)
    undelete = getattr(backend, "undelete", None)
    if undelete and not dry_run:
        undelete()  # objects a client's key hid are still there: make them visible so they are deleted too
    if not backend.exists("config"):
        return _resume_without_config(backend, client, dry_run, rep)
    vault = Vault.open(backend, passphrase)
    rep.vault_id = vault.config.id
    snaps, broken = vault.list_snapshots()
    if broken:
        raise DobaasError(f"{backend.location}: snapshot {broken[0][0][:12]} has a damaged manifest, so whose it is "
                          f"cannot be told ({broken[0][1]}); run `dobaas verify` and forget it first")
    mine = [s for s in snaps if owner(s.name) == client]
    others = [s for s in snaps if owner(s.name) != client]
    rep.snapshots_deleted, rep.snapshot_ids = len(mine), sorted(s.id for s in mine)
    rep.local_caches_removed = _remove_caches(vault, mine, whole=not others, dry_run=dry_run)
    if others:
        rep.mode = "shared vault"
        log.info("%s: shared with %d other snapshot(s): forgetting %d snapshot(s) of %s", backend.location,
                 len(others), len(mine), client)
        if dry_run:
            return rep
        sizes = {n.rsplit("/", 1)[-1]: sz for n, sz in backend.list("snapshots")}
        held = set(forget(vault, mine))
        for s in mine:
            if s.id in held:
                _schedule(rep, backend, f"snapshots/{s.id}", sizes.get(s.id, 0))
            else:
                rep.objects_deleted += 1
                rep.bytes_deleted += sizes.get(s.id, 0)
        gc = collect_garbage(vault, repack_threshold=0.0)
        if not gc.ran:
            raise DobaasError(f"{backend.location}: the client's data could not be collected now "
                              f"({gc.deferred_reason}); its snapshots are forgotten: run the command again")
        rep.objects_deleted += gc.packs_deleted + gc.packs_repacked + gc.orphan_packs_deleted
        rep.bytes_deleted += gc.bytes_freed
        if gc.held_by_lock:
            rep.scheduled.append({"retained_until": None, "objects": gc.held_by_lock, "bytes": 0})
        rep.remaining_objects = len(held) + gc.held_by_lock
        return rep
    rep.mode = "whole vault"
    if not dry_run and not backend.exists(MARKER):
        backend.put(MARKER, client.encode())
    return _delete_all(backend, dry_run, rep)


def _resume_without_config(backend: Backend, client: str, dry_run: bool, rep: VaultDestruction) -> VaultDestruction:
    """No config: a destruction of this client that was interrupted (its marker is there) resumes; anything
    else is not ours to touch."""
    try:
        marker = backend.get(MARKER).decode()
    except ObjectMissing:
        rep.mode = "nothing here"
        rep.remaining_objects = 0
        return rep
    if marker != client:
        raise DobaasError(f"{backend.location} is being destroyed for client {marker!r}, not {client!r}")
    rep.mode = "whole vault"
    return _delete_all(backend, dry_run, rep)


def _delete_all(backend: Backend, dry_run: bool, rep: VaultDestruction) -> VaultDestruction:
    objects = sorted(backend.list(""), key=lambda o: (_last(o[0]), o[0]))
    keys = [n for n, _ in objects if n.startswith("keys/")]
    for name, size in objects:
        if dry_run:
            if name != MARKER:
                rep.objects_deleted += 1
                rep.bytes_deleted += size
            continue
        if name == MARKER and rep.scheduled:
            continue  # kept until everything else is gone: the next run resumes from it
        try:
            backend.delete(name)
        except ObjectMissing:
            continue
        except ObjectLocked as e:
            _schedule(rep, backend, name, size, e.until)
            continue
        if name != MARKER:  # the destruction's own marker is not the client's data
            rep.objects_deleted += 1
            rep.bytes_deleted += size
        log.info("deleted %s/%s (%d bytes)", backend.location, name, size)
    rep.remaining_objects = 0 if dry_run else sum(1 for _ in backend.list(""))
    rep.keys_destroyed = not dry_run and not any(backend.exists(k) for k in keys)
    return rep


def _schedule(rep: VaultDestruction, backend: Backend, name: str, size: int, until: str | None = None) -> None:
    log.info("%s/%s is under Object Lock until %s: deletion scheduled", backend.location, name, until or "?")
    for s in rep.scheduled:
        if s["retained_until"] == until:
            s["objects"] += 1
            s["bytes"] += size
            return
    rep.scheduled.append({"retained_until": until, "objects": 1, "bytes": size})


def _remove_caches(vault: Vault, mine: list, whole: bool, dry_run: bool) -> int:
    """This machine's caches of the client's data: the listings of its snapshots, and the vault's index table
    when the whole vault goes."""
    cache = ListingCache(listing_dir(), vault.cipher.master.mac_key)
    paths: set[str] = set()
    for s in mine:
        for item in s.items:
            paths.update(glob.glob(os.path.join(cache.dir, cache.slot(s.name, item["name"]) + ".*")))
    index_dir = os.path.join(cache_root(), "index", vault.config.id)
    if whole and os.path.isdir(index_dir):
        paths.add(index_dir)
    if not dry_run:
        for p in paths:
            shutil.rmtree(p) if os.path.isdir(p) else os.unlink(p)
    return len(paths)
