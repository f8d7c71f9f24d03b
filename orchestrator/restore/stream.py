"""Restore a byte-stream item (a dump, an archived log) into a writable file object, every chunk authenticated."""

from __future__ import annotations

from typing import BinaryIO

from orchestrator.vault.repository import Vault
from orchestrator.vault.snapshot import Item, item_refs


def restore_stream(vault: Vault, item: Item, out: BinaryIO, what: str = "") -> int:
    """Write a stream item to ``out`` in order; every chunk is authenticated and re-hashed. Returns bytes written."""
    what = what or f"item {item['name']}"
    written = 0
    for offset, _length, cid in item_refs(item, lambda c: vault.read_chunk(c, f"{what} map")):
        data = vault.read_chunk(cid, f"{what} at offset {offset}")
        out.write(data)
        written += len(data)
    return written
