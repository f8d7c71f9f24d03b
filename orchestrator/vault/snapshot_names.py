"""The name and time of each snapshot of a vault, kept on local disk, so that a backup finds its parent with one
listing and one manifest read instead of reading every manifest the vault holds (every client's, every source's:
a vault of hourly database backups holds thousands, and on SFTP or S3 each read is a round trip).

Safe by construction: a manifest's name is the hash of its sealed content, so what is recorded of an id never
changes; the file is authenticated with a key derived from the vault's keys (a damaged or foreign file is
ignored, never trusted); ids the vault no longer lists are dropped. The vault stays the source of truth: without
the file, every manifest is read, as before.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets

import blake3

from orchestrator.cachedir import cache_root

log = logging.getLogger(__name__)

FORMAT = 1


class SnapshotNames:
    def __init__(self, vault_id: str, mac_key: bytes) -> None:
        self.path = os.path.join(cache_root(), "snapshots", f"{vault_id}.json")
        self.key = blake3.blake3(mac_key, derive_key_context="dobaas snapshot names v1").digest()

    def load(self) -> dict[str, tuple[str, str]]:
        """id -> (name, time); empty when there is no file or it fails authentication."""
        try:
            with open(self.path, "rb") as f:
                data = f.read()
        except OSError:
            return {}
        body, mac = data[:-32], data[-32:]
        if len(data) < 32 or blake3.blake3(body, key=self.key).digest() != mac:
            log.warning("snapshot names cache %s fails authentication; ignored", self.path)
            return {}
        try:
            doc = json.loads(body)
            if doc.get("format") != FORMAT:
                return {}
            return {sid: (name, time) for sid, (name, time) in doc["snapshots"].items()}
        except (ValueError, TypeError, KeyError, AttributeError):
            return {}

    def store(self, names: dict[str, tuple[str, str]]) -> None:
        """Replace the file (written aside, then renamed: a reader never sees half of it). A failure only costs
        the next run its reads."""
        body = json.dumps({"format": FORMAT, "snapshots": names}, separators=(",", ":")).encode()
        tmp = f"{self.path}.tmp-{secrets.token_hex(4)}"
        try:
            os.makedirs(os.path.dirname(self.path), mode=0o700, exist_ok=True)
            with open(tmp, "wb") as f:
                f.write(body)
                f.write(blake3.blake3(body, key=self.key).digest())
            os.replace(tmp, self.path)
        except OSError as e:
            log.info("snapshot names cache not written (%s); the next backup reads every manifest", e)
            with contextlib.suppress(OSError):
                os.unlink(tmp)
