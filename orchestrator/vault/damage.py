"""Damage records: which stored copies of chunks are known to be damaged, so the vault heals.

Deduplication means a damaged chunk would otherwise stay damaged forever: every later backup of an unchanged
file or block references the same chunk id, and a chunk the index lists is never stored again. ``verify``
therefore writes what it found as a write-once record (``damaged/<hash>``, sealed: chunk id, the pack holding the
bad copy, why). Every reader of the index applies the records (``Vault.load_index``): a chunk whose only copy is
damaged is *quarantined* — absent for backups, so the next backup that meets the same data stores it again, and
named as damaged for restores — and once a good copy exists anywhere, the chunk id points to it, which repairs
every snapshot that references it, old ones included. Garbage collection then rewrites the packs holding the
superseded bad copies.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime

from orchestrator.errors import IntegrityError
from orchestrator.vault.backend import AlreadyExists, Backend, ObjectMissing
from orchestrator.vault.crypto import AAD_DAMAGE, Cipher, content_hash

log = logging.getLogger(__name__)

PREFIX = "damaged"
#: chunk id -> {pack holding a damaged copy -> why}
Records = dict[bytes, dict[str, str]]


def load_records(backend: Backend, cipher: Cipher) -> Records:
    """Every damage record of the vault; a record that does not decode is itself reported and skipped."""
    out: Records = {}
    for name, _size in backend.list(PREFIX):
        try:
            doc = json.loads(cipher.open(backend.get(name), AAD_DAMAGE, f"damage record {name}"))
            for r in doc["chunks"]:
                out.setdefault(bytes.fromhex(r["id"]), {})[r["pack"]] = r["reason"]
        except (IntegrityError, ObjectMissing, ValueError, KeyError, TypeError) as e:
            log.warning("damage record %s is unreadable (%s): ignored", name, e)
    return out


def write_record(backend: Backend, cipher: Cipher, damaged: dict[bytes, tuple[str, str]]) -> str:
    """Record ``damaged`` (chunk id -> (pack, why)); the record's name. Raises OSError/PermissionError when the
    storage refuses it."""
    doc = {"time": datetime.now(UTC).isoformat(),
           "chunks": [{"id": cid.hex(), "pack": pack, "reason": why} for cid, (pack, why) in sorted(damaged.items())]}
    sealed = cipher.seal(json.dumps(doc).encode(), AAD_DAMAGE)
    name = f"{PREFIX}/{content_hash(sealed)}"
    try:
        backend.put(name, sealed)
    except FileNotFoundError:  # a vault made before records existed: its directory is made on first use
        make_layout = getattr(backend, "make_layout", None)
        if make_layout is None:
            raise
        make_layout([PREFIX])
        backend.put(name, sealed)
    except AlreadyExists:
        pass
    return name
