"""Restore a database snapshot: the core streams the stored items (dumps, archived logs) out of the vault, every
chunk authenticated and re-hashed; the database's plugin loads them into a server and checks the result."""

from __future__ import annotations

import time
from typing import BinaryIO

from orchestrator.errors import UsageError
from orchestrator.plugin import registry
from orchestrator.restore.stream import restore_stream
from orchestrator.vault.repository import Vault
from orchestrator.vault.snapshot import Snapshot


def verify_database_backups(vault: Vault, snap: Snapshot) -> list[str] | None:
    """The plugin's deep check of a database snapshot (its stored backups streamed out, authenticated); None when
    the plugin has none."""
    plugin = registry.load(snap.meta.get("plugin", ""))
    items = {i["name"]: i for i in snap.items if i["type"] == "stream"}

    def write_item(name: str, out: BinaryIO) -> int:
        return restore_stream(vault, items[name], out, f"snapshot {snap.id[:12]} item {name}")

    try:
        return plugin.verify_backups(snap.meta, sorted(items), write_item)
    except NotImplementedError:
        return None


def restore_database(vault: Vault, snap: Snapshot, plugin_name: str, options: dict) -> dict:
    t0 = time.monotonic()
    if snap.meta.get("plugin") != plugin_name:
        raise UsageError(f"snapshot {snap.id[:12]} ({snap.name}) is not a {plugin_name} snapshot "
                         f"(plugin {snap.meta.get('plugin') or 'none'})")
    plugin = registry.load(plugin_name)
    items = {i["name"]: i for i in snap.items if i["type"] == "stream"}

    def write_item(name: str, out: BinaryIO) -> int:
        return restore_stream(vault, items[name], out, f"snapshot {snap.id[:12]} item {name}")

    try:
        result = plugin.restore_database(snap.meta, sorted(items), write_item, options)
    except NotImplementedError as e:
        raise UsageError(str(e)) from None
    return {"id": snap.id, "snapshot_time": snap.time, "source": snap.name, **result,
            "seconds": round(time.monotonic() - t0, 3)}
