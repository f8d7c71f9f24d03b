"""After a run: the snapshots it published copied to the policy's ``copy_to`` vault (3-2-1). A failed copy
never touches the run's snapshots (they are safe in the first vault); it is reported, logged and makes the run's
exit code a failure so that monitoring sees it, and the next run copies what is still missing."""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Callable

from orchestrator.cachedir import cache_root
from orchestrator.errors import BadInput, DobaasError
from orchestrator.policy.model import Policy
from orchestrator.vault.copy import IdMap, copies_in, copy_snapshots
from orchestrator.vault.repository import Vault

log = logging.getLogger(__name__)


def id_map_path(src_id: str, dst_id: str) -> str:
    """Where the id map of a (source, destination) pair of vaults is kept: next to the listing cache."""
    pair = hashlib.sha256(f"{src_id}>{dst_id}".encode()).hexdigest()[:32]
    return os.path.join(cache_root(), "copy", f"{pair}.sqlite")


def copy_after_run(policy: Policy, vault: Vault, snapshot_ids: list[str], mine: Callable[[str], bool]) -> dict:
    """Copy the run's snapshots, and those of the policy's sources (``mine``: its snapshot names) that a failed
    copy left behind, taken since the first one the destination holds (older history is `dobaas copy`'s job)."""
    target = policy.copy_to
    assert target is not None
    try:
        passphrase = target.passphrase()
        if not passphrase:
            raise BadInput(f"{policy.file or policy.policy}: copy_to needs passphrase_env or passphrase_file "
                           "(the second vault has its own keys)")
        dst = Vault.open(target.backend(), passphrase)
        ours = [s for s in vault.list_snapshots()[0] if mine(s.name)]  # the run's own among them
        copied = copies_in(dst, vault.config.id)
        first = min((s.time for s in ours if s.id in copied), default=None)
        run = set(snapshot_ids)
        snaps = [s for s in ours if s.id in run or (first is not None and s.time >= first and s.id not in copied)]
        id_map = IdMap(id_map_path(vault.config.id, dst.config.id))
        try:
            rep = copy_snapshots(vault, dst, snaps, id_map, lock_wait=60)
        finally:
            id_map.close()
    except Exception as e:
        why = str(e) if isinstance(e, DobaasError) else f"{type(e).__name__}: {e}"
        log.error("policy %s: copy to %s failed (the run's snapshots are safe in %s): %s", policy.policy,
                  target.vault, vault.backend.location, why)
        return {"vault": target.vault, "status": "failed", "error": why}
    log.info("policy %s: %d snapshot(s) copied to %s (%d new chunk(s), %d B sent)", policy.policy,
             len(rep.copied), dst.backend.location, rep.chunks_sent, rep.bytes_sent)
    return {"vault": target.vault, "status": "ok", **rep.to_json()}
