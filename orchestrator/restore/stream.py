"""Restore a byte-stream item (a dump, an archived log) into a writable file object, every chunk authenticated."""

from __future__ import annotations

from typing import Any, Protocol

from orchestrator.vault.repository import Vault
from orchestrator.vault.snapshot import Item, item_refs


class Writable(Protocol):
    """Where restored bytes go: a file, or anything with ``write`` (an export hashing what it writes)."""

    def write(self, data: Any, /) -> Any: ...


def restore_stream(vault: Vault, item: Item, out: Writable, what: str = "") -> int:
    """Write a stream item to ``out`` in order; every chunk is authenticated and re-hashed. Returns bytes written."""
    what = what or f"item {item['name']}"
    written = 0
    for offset, _length, cid in item_refs(item, lambda c: vault.read_chunk(c, f"{what} map")):
        data = vault.read_chunk(cid, f"{what} at offset {offset}")
        out.write(data)
        written += len(data)
    return written
