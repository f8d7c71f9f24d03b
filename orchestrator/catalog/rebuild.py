"""Rebuild the catalog from the vault alone."""

from __future__ import annotations

from orchestrator.catalog.db import Catalog, entry_rows
from orchestrator.catalog.rows import EntryRow
from orchestrator.vault.repository import Vault
from orchestrator.vault.tree import iter_tree


def rebuild(vault: Vault, catalog: Catalog) -> tuple[int, int]:
    """Clear the catalog's snapshot and file index and record every snapshot of the vault, oldest first.
    The restore audit trail is kept (it exists only in the catalog)."""
    snaps, _broken = vault.list_snapshots()
    catalog.clear()
    files = 0
    for snap in snaps:
        rows: list[EntryRow] = []
        for item in snap.items:
            if item["type"] == "tree":
                rows.extend(entry_rows(item, iter_tree(item, lambda c: vault.read_chunk(c, "listing"))))
        files += len(rows)
        catalog.record_snapshot(snap, vault.backend.location, rows)
    return len(snaps), files
