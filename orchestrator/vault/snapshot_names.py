"""The name and time of each snapshot of a vault, kept on local disk, so that a backup finds its parent with one
listing and one manifest read instead of reading every manifest the vault holds (every client's, every source's:
a vault of hourly database backups holds thousands, and on SFTP or S3 each read is a round trip).

Safe by construction: a manifest's name is the hash of its sealed content, so what is recorded of an id never
changes; the file is authenticated with a key derived from the vault's keys (a damaged or foreign file is
ignored, never trusted); ids the vault no longer lists are dropped. The vault stays the source of truth: without
the file, every manifest is read, as before.
"""

from __future__ import annotations

import json
import os

from orchestrator.cachedir import cache_key, cache_root, read_authenticated, write_authenticated

FORMAT = 1


class SnapshotNames:
    def __init__(self, vault_id: str, mac_key: bytes) -> None:
        self.path = os.path.join(cache_root(), "snapshots", f"{vault_id}.json")
        self.key = cache_key(mac_key, "snapshot names")

    def load(self) -> dict[str, tuple[str, str]]:
        """id -> (name, time); empty when there is no file or it fails authentication."""
        body = read_authenticated(self.path, self.key, "snapshot names cache")
        if body is None:
            return {}
        try:
            doc = json.loads(bytes(body))
            if doc.get("format") != FORMAT:
                return {}
            return {sid: (name, time) for sid, (name, time) in doc["snapshots"].items()}
        except (ValueError, TypeError, KeyError, AttributeError):
            return {}

    def store(self, names: dict[str, tuple[str, str]]) -> None:
        """Replace the file; a failure only costs the next backup its reads of every manifest."""
        body = json.dumps({"format": FORMAT, "snapshots": names}, separators=(",", ":")).encode()
        write_authenticated(self.path, self.key, [body], "snapshot names cache")
