"""Snapshot manifests: one sealed object per snapshot, written last, that makes a backup visible.

A snapshot lists items. Item types known to the vault format (it knows no VMs or databases):
- ``image``: a block device image cut into fixed-size blocks; its block map (one 32-byte chunk id per block,
  ZERO_ID for holes) is stored as meta chunks of up to MAP_SPAN ids each, so unchanged parts of the map
  deduplicate between snapshots.
- ``stream``: a byte stream cut by content-defined chunking; its map pieces hold (id, length) entries.
Everything a plugin wants to keep (checkpoint tokens, VM configuration, …) goes into ``meta``.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime

import zstandard

from orchestrator.errors import IntegrityError
from orchestrator.vault.crypto import AAD_SNAPSHOT, ID_LEN, ZERO_ID, Cipher, content_hash
from orchestrator.vault.records import Item

MAP_SPAN = 4096  # entries per map piece: 128 KiB of ids for images, covering 256 MiB at 64 KiB blocks
STREAM_ENTRY = struct.Struct("<32sI")


@dataclass
class Snapshot:
    name: str
    items: list[Item]
    time: str = field(default_factory=lambda: datetime.now(UTC).isoformat())
    hostname: str = ""
    parent: str | None = None
    meta: dict = field(default_factory=dict)
    stats: dict = field(default_factory=dict)
    id: str = ""  # the object's name; not part of the stored document

    def to_json(self) -> dict:
        return {
            "version": 1,
            "time": self.time,
            "name": self.name,
            "hostname": self.hostname,
            "parent": self.parent,
            "items": self.items,
            "meta": self.meta,
            "stats": self.stats,
        }

    def item(self, name: str) -> Item | None:
        return next((i for i in self.items if i["name"] == name), None)

    @property
    def datetime(self) -> datetime:
        return datetime.fromisoformat(self.time)


def name_problem(name: str) -> str | None:
    """Why ``name`` cannot name a snapshot, or None. Names are ``client/source[/unit]`` or a user's own: any
    characters (a VM may be called "Web (old) 01"), but not empty, no control characters, and slash-separated
    parts that are neither empty nor '.' nor '..' (a name must never read as a path that leaves somewhere)."""
    if not name or not name.strip():
        return "a snapshot name must not be empty"
    if len(name) > 500:
        return "a snapshot name is at most 500 characters"
    if any(ord(c) < 32 or ord(c) == 127 for c in name):
        return "a snapshot name has no control characters"
    if any(part in ("", ".", "..") for part in name.split("/")):
        return f"snapshot name {name!r}: parts between slashes must not be empty, '.' or '..'"
    return None


def encode_snapshot(cipher: Cipher, snap: Snapshot) -> tuple[str, bytes]:
    plain = zstandard.ZstdCompressor(level=3).compress(json.dumps(snap.to_json()).encode())
    sealed = cipher.seal(plain, AAD_SNAPSHOT)
    return content_hash(sealed), sealed


def decode_snapshot(cipher: Cipher, sid: str, sealed: bytes) -> Snapshot:
    what = f"snapshot {sid[:12]} manifest"
    if content_hash(sealed) != sid:
        raise IntegrityError(f"{what}: content does not match its name (damaged)")
    plain = cipher.open(sealed, AAD_SNAPSHOT, what)
    try:
        d = json.loads(zstandard.ZstdDecompressor().decompress(plain))
        return Snapshot(
            name=d["name"], items=d["items"], time=d["time"], hostname=d.get("hostname", ""),
            parent=d.get("parent"), meta=d.get("meta", {}), stats=d.get("stats", {}), id=sid,
        )
    except (ValueError, KeyError, zstandard.ZstdError) as e:
        raise IntegrityError(f"{what}: cannot be decoded ({e})") from None


def split_map(data: bytes | bytearray, entry_size: int) -> list[bytes]:
    """Cut a serialized map into meta pieces of MAP_SPAN entries."""
    step = MAP_SPAN * entry_size
    return [bytes(data[i : i + step]) for i in range(0, len(data), step)] or [b""]


ReadMeta = Callable[[bytes], bytes]


def load_image_map(item: Item, read_meta: ReadMeta) -> bytearray:
    """Concatenate an image item's map pieces into one bytearray of 32-byte ids."""
    out = bytearray()
    for hexid in item["map"]:
        out += read_meta(bytes.fromhex(hexid))
    nblocks = -(-item["size"] // item["block_size"])
    if len(out) != nblocks * ID_LEN:
        raise IntegrityError(f"item {item['name']}: block map has {len(out) // ID_LEN} entries, expected {nblocks}")
    return out


def item_refs(item: Item, read_meta: ReadMeta) -> Iterator[tuple[int, int, bytes]]:
    """Yield (offset, length, chunk id) for every non-hole range of an item (for trees, offsets are within
    each file: use ``item_refs_located`` to know which file)."""
    for offset, length, cid, _path in item_refs_located(item, read_meta):
        yield offset, length, cid


def item_refs_located(item: Item, read_meta: ReadMeta) -> Iterator[tuple[int, int, bytes, str | None]]:
    """Like item_refs, with the file path for tree items (None for images and streams)."""
    if item["type"] == "tree":
        from orchestrator.vault.tree import tree_refs

        yield from tree_refs(item, read_meta)
        return
    yield from ((o, n, c, None) for o, n, c in _flat_refs(item, read_meta))


def _flat_refs(item: Item, read_meta: ReadMeta) -> Iterator[tuple[int, int, bytes]]:
    if item["type"] == "image":
        m = load_image_map(item, read_meta)
        bs, size = item["block_size"], item["size"]
        for i in range(len(m) // ID_LEN):
            cid = bytes(m[i * ID_LEN : (i + 1) * ID_LEN])
            if cid != ZERO_ID:
                yield i * bs, min(bs, size - i * bs), cid
    elif item["type"] == "stream":
        offset = 0
        for hexid in item["map"]:
            for cid, length in STREAM_ENTRY.iter_unpack(read_meta(bytes.fromhex(hexid))):
                yield offset, length, cid
                offset += length
        if offset != item["size"]:
            raise IntegrityError(f"item {item['name']}: stream map covers {offset} bytes, expected {item['size']}")
    else:
        raise IntegrityError(f"item {item['name']}: unknown item type {item['type']!r}")


def item_meta_ids(item: Item) -> list[bytes]:
    return [bytes.fromhex(h) for h in item.get("map", [])]
