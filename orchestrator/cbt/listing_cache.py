"""A local cache of a tree item's listing in compact form, so the next capture of the same source need not
rebuild 100,000 entry objects from JSON (the dominant cost of a nightly incremental).

Safe by construction: the cache is keyed by the listing's chunk ids (immutable content) and authenticated with
a key derived from the vault's keys, so a damaged or foreign cache file is ignored, never trusted. The vault
stays the source of truth: without a cache, the listing is read from the vault.
"""

from __future__ import annotations

import contextlib
import marshal
import os
import struct
import threading
from collections.abc import Iterator

import blake3

from orchestrator.cachedir import cache_key, cache_root, read_authenticated, write_authenticated
from orchestrator.cbt.listing import Listing
from orchestrator.vault.snapshot import Item

#: 5: the format number, then each column of a Listing (with its pieces) as a marshal object of its own after its
#: length (u64le), so that writing never holds more than one column's bytes, and loading is ``marshal.loads`` of a
#: slice (``marshal.load`` of a file reads item by item: 0.5 s for a column of 100,000 signatures). 3 marshalled
#: all columns as one object, written with the MAC appended: two copies of 40 MB at the end of a first backup of
#: 100,000 files; 1 had one tuple per entry, and took four times as long to load
FORMAT = 5
LENGTH = struct.Struct("<Q")


def default_dir() -> str:
    return os.path.join(cache_root(), "listings")


class ListingCache:
    def __init__(self, directory: str, mac_key: bytes) -> None:
        self.dir = directory
        self.key = cache_key(mac_key, "listing cache")
        self._writers: list[threading.Thread] = []

    def store_later(self, item: Item, slot: str, listing: Listing) -> None:
        """Store on a thread while the run publishes its snapshot and updates the catalog (their fsyncs and
        SQLite calls leave the interpreter free); ``wait`` joins it. Not a daemon: the process waits at exit."""
        t = threading.Thread(target=self.store, args=(item, slot, listing), name="listing-cache")
        t.start()
        self._writers.append(t)

    def wait(self) -> None:
        for t in self._writers:
            t.join()
        self._writers.clear()

    def _name(self, item: Item, slot: str) -> str:
        content = blake3.blake3(",".join(item["map"]).encode(), key=self.key).hexdigest()[:32]
        return os.path.join(self.dir, f"{slot}.{content}")

    def slot(self, snapshot_name: str, item_name: str) -> str:
        """One cache file per (snapshot name, item): older ones are replaced."""
        return blake3.blake3(f"{snapshot_name}\0{item_name}".encode(), key=self.key).hexdigest()[:24]

    def load(self, item: Item, slot: str) -> Listing | None:
        body = read_authenticated(self._name(item, slot), self.key, "listing cache")
        if body is None:
            return None
        try:
            pos, objs = 0, []
            while pos < len(body):
                (size,) = LENGTH.unpack_from(body, pos)
                pos += LENGTH.size
                if pos + size > len(body):
                    return None
                objs.append(marshal.loads(body[pos : pos + size]))
                pos += size
            if not objs or objs[0] != FORMAT:
                return None
            return Listing.from_columns(tuple(objs[1:]))
        except (ValueError, EOFError, TypeError, struct.error):
            return None

    def store(self, item: Item, slot: str, listing: Listing) -> None:
        final = self._name(item, slot)

        def parts() -> Iterator[bytes]:  # a column at a time
            for obj in (FORMAT, *listing.columns()):
                part = marshal.dumps(obj)
                yield LENGTH.pack(len(part))
                yield part

        if write_authenticated(final, self.key, parts(), "listing cache"):
            for name in os.listdir(self.dir):  # keep only the newest listing of this slot
                if name.startswith(slot + ".") and os.path.join(self.dir, name) != final:
                    with contextlib.suppress(OSError):
                        os.unlink(os.path.join(self.dir, name))
