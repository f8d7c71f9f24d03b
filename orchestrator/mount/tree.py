"""The read-only view `dobaas mount` shows: snapshots by client, source and date as directories, file trees as
they were, disk images and stored streams as files. Nodes are built lazily (a snapshot's listing is read the
first time its folder is opened) and every byte read is authenticated by the vault."""

from __future__ import annotations

import base64
import bisect
import stat
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from orchestrator.plugin.export import item_file_name
from orchestrator.vault.crypto import ID_LEN, ZERO_ID
from orchestrator.vault.records import Item
from orchestrator.vault.repository import Vault
from orchestrator.vault.snapshot import Snapshot, item_refs, load_image_map
from orchestrator.vault.tree import iter_tree

_MODES = {"d": stat.S_IFDIR, "f": stat.S_IFREG, "l": stat.S_IFLNK, "c": stat.S_IFCHR, "b": stat.S_IFBLK,
          "p": stat.S_IFIFO, "s": stat.S_IFSOCK}
CACHE_CHUNKS = 64  # decoded chunks kept for sequential and neighbouring reads


@dataclass
class Node:
    mode: int  # st_mode with the file type
    size: int = 0
    mtime_ns: int = 0
    uid: int = 0
    gid: int = 0
    nlink: int = 1
    rdev: int = 0
    link: str = ""
    xattrs: dict[str, bytes] = field(default_factory=dict)
    children: dict[str, Node] | None = None  # directories
    #: content: (offsets, lengths, chunk ids) of a file, or an image's (block map, block size)
    refs: tuple[list[int], list[int], list[bytes]] | None = None
    image: tuple[bytearray, int] | None = None
    #: a snapshot folder not opened yet: fills ``children`` on first use
    load: Callable[[], dict[str, Node]] | None = None

    @property
    def is_dir(self) -> bool:
        return stat.S_ISDIR(self.mode)


def folder(mtime_ns: int = 0, children: dict[str, Node] | None = None) -> Node:
    return Node(stat.S_IFDIR | 0o555, mtime_ns=mtime_ns, nlink=2, children=children if children is not None else {})


def _put(root: Node, path: str, node: Node) -> None:
    """Place ``node`` at ``path`` below ``root``, making the folders on the way."""
    parts = [p for p in path.split("/") if p]
    cur = root
    for p in parts[:-1]:
        assert cur.children is not None
        nxt = cur.children.get(p)
        if nxt is None or not nxt.is_dir:
            nxt = cur.children[p] = folder(root.mtime_ns)
        cur = nxt
    assert cur.children is not None
    if parts:
        old = cur.children.get(parts[-1])
        if old is not None and old.is_dir and node.is_dir and old.children:
            node.children = {**old.children, **(node.children or {})}
        cur.children[parts[-1]] = node
    else:
        root.mode, root.uid, root.gid, root.mtime_ns, root.xattrs = (node.mode, node.uid, node.gid, node.mtime_ns,
                                                                     node.xattrs)


class SnapshotView:
    """Reads for the nodes of one vault: chunk cache, one vault call at a time (FUSE serves many threads)."""

    def __init__(self, vault: Vault) -> None:
        self.vault = vault
        self._lock = threading.Lock()
        self._cache: OrderedDict[bytes, bytes] = OrderedDict()

    def chunk(self, cid: bytes, what: str) -> bytes:
        with self._lock:
            data = self._cache.get(cid)
            if data is None:
                data = self.vault.read_chunk(cid, what)
                self._cache[cid] = data
                if len(self._cache) > CACHE_CHUNKS:
                    self._cache.popitem(last=False)
            else:
                self._cache.move_to_end(cid)
            return data

    def meta(self, cid: bytes) -> bytes:
        with self._lock:
            return self.vault.read_chunk(cid, "listing")

    def read(self, node: Node, offset: int, size: int, what: str) -> bytes:
        """``size`` bytes of a file or image node from ``offset`` (short at the end)."""
        end = min(offset + size, node.size)
        if offset >= end:
            return b""
        out = bytearray()
        if node.image is not None:
            bmap, bs = node.image
            for b in range(offset // bs, (end - 1) // bs + 1):
                cid = bytes(bmap[b * ID_LEN : (b + 1) * ID_LEN])
                block = bytes(min(bs, node.size - b * bs)) if cid == ZERO_ID else self.chunk(cid, what)
                lo, hi = max(offset - b * bs, 0), min(end - b * bs, len(block))
                out += block[lo:hi]
            return bytes(out)
        assert node.refs is not None
        offs, lens, cids = node.refs
        i = bisect.bisect_right(offs, offset) - 1
        while i < len(offs) and offs[i] < end:
            data = self.chunk(cids[i], what)
            lo, hi = max(offset - offs[i], 0), min(end - offs[i], lens[i])
            out += data[lo:hi]
            i += 1
        return bytes(out)

    # ---- building nodes ------------------------------------------------------------------------------------
    def snapshot_children(self, snap: Snapshot) -> dict[str, Node]:
        """A snapshot's items: trees as folders (by their root path), images as NAME.img, streams by name."""
        top = folder(_ns(snap))
        for item in snap.items:
            if item["type"] == "tree":
                _put(top, item_file_name(item.get("root", item["name"])), self._tree(item, _ns(snap)))
            elif item["type"] == "image":
                node = Node(stat.S_IFREG | 0o444, size=item["size"], mtime_ns=_ns(snap))
                bmap = load_image_map(item, self.meta)
                node.image = (bmap, item["block_size"])
                _put(top, item_file_name(item["name"]) + ".img", node)
            elif item["type"] == "stream":
                node = Node(stat.S_IFREG | 0o444, size=item["size"], mtime_ns=_ns(snap))
                node.refs = _columns([(o, n, c) for o, n, c in item_refs(item, self.meta)])
                _put(top, item_file_name(item["name"]), node)
        assert top.children is not None
        return top.children

    def _tree(self, item: Item, mtime_ns: int) -> Node:
        root = folder(mtime_ns)
        first: dict[str, Node] = {}
        for e in iter_tree(item, self.meta):
            kind = e["t"]
            if kind == "h":
                target = first.get(e["l"])
                if target is None:
                    continue
                target.nlink += 1
                _put(root, e["p"], target)
                continue
            node = Node(_MODES.get(kind, stat.S_IFREG) | (e.get("m", 0o755 if kind == "d" else 0o644) & 0o7777),
                        size=e.get("s", 0) if kind == "f" else len(e.get("l", "")), mtime_ns=e.get("mt", 0),
                        uid=e.get("u", 0), gid=e.get("g", 0), rdev=e.get("rd", 0), link=e.get("l", ""))
            if kind == "d":
                node.children, node.nlink = {}, 2
            if kind == "f":
                off, parts = 0, []
                for hexid, length in e.get("c", []):
                    parts.append((off, length, bytes.fromhex(hexid)))
                    off += length
                node.refs, node.size = _columns(parts), off
                if e.get("n", 1) > 1:
                    first[e["p"]] = node
            node.xattrs = {k: base64.b64decode(v) for k, v in e.get("x", {}).items()}
            _put(root, e["p"], node)
        return root


def _columns(refs: list[tuple[int, int, bytes]]) -> tuple[list[int], list[int], list[bytes]]:
    return [r[0] for r in refs], [r[1] for r in refs], [r[2] for r in refs]


def _ns(snap: Snapshot) -> int:
    return int(snap.datetime.timestamp() * 1_000_000_000)


def date_name(snap: Snapshot) -> str:
    """A snapshot's folder name: its local date and time, sortable (2026-12-02_174455)."""
    return datetime.fromisoformat(snap.time).astimezone().strftime("%Y-%m-%d_%H%M%S")


def snapshot_root(view: SnapshotView, snap: Snapshot) -> Node:
    """One snapshot's content as the root of a mount."""
    return folder(_ns(snap), view.snapshot_children(snap))


def by_source(view: SnapshotView, snaps: list[Snapshot]) -> Node:
    """client/source[/unit]/DATE folders for ``snaps``, each opened lazily, and a ``latest`` link per name."""
    root = folder()
    for snap in snaps:  # oldest first
        parent = root
        for part in (p for p in snap.name.split("/") if p not in ("", ".", "..")):
            assert parent.children is not None
            parent = parent.children.setdefault(part, folder(_ns(snap)))
        assert parent.children is not None
        name = unique = date_name(snap)
        n = 2
        while unique in parent.children:
            unique, n = f"{name}-{n}", n + 1
        parent.children[unique] = Node(stat.S_IFDIR | 0o555, mtime_ns=_ns(snap), nlink=2,
                                       load=lambda s=snap: view.snapshot_children(s))  # type: ignore[misc]
        parent.children["latest"] = Node(stat.S_IFLNK | 0o777, size=len(unique), link=unique, mtime_ns=_ns(snap))
    return root


_loading = threading.Lock()


def lookup(root: Node, path: str) -> Node | None:
    """The node at ``path`` ('/' separated), opening snapshot folders on the way; None when there is none."""
    cur = root
    for p in [p for p in path.split("/") if p]:
        children = entries(cur)
        if children is None or p not in children:
            return None
        cur = children[p]
    return cur


def entries(node: Node) -> dict[str, Node] | None:
    """A folder's children (a snapshot folder's are read from the vault the first time)."""
    if node.children is None and node.load is not None:
        with _loading:
            if node.children is None and node.load is not None:
                node.children, node.load = node.load(), None
    return node.children
