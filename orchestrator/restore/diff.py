"""What changed between two snapshots: for trees, the entries added, removed and modified (content, or only
metadata); for images, the byte ranges whose blocks differ. Read from the listings and block maps alone: no file
content is read."""

from __future__ import annotations

from collections.abc import Iterator

from orchestrator.errors import UsageError
from orchestrator.restore.tree import path_under, selected
from orchestrator.vault.crypto import ID_LEN
from orchestrator.vault.records import Item, TreeEntry
from orchestrator.vault.repository import Vault
from orchestrator.vault.snapshot import Snapshot, load_image_map
from orchestrator.vault.tree import iter_tree

METADATA = ("t", "m", "u", "g", "mt", "l", "x", "a", "sd")


def diff_snapshots(vault: Vault, a: Snapshot, b: Snapshot, path: str | None = None) -> dict:
    items_a, items_b = {i["name"]: i for i in a.items}, {i["name"]: i for i in b.items}
    out: dict = {"from": a.id, "to": b.id, "items": []}
    for name in sorted(set(items_a) | set(items_b)):
        ia, ib = items_a.get(name), items_b.get(name)
        if ia is None or ib is None:
            out["items"].append({"item": name, "status": "added" if ia is None else "removed"})
            continue
        if ia["type"] != ib["type"]:
            raise UsageError(f"item {name} is a {ia['type']} in one snapshot and a {ib['type']} in the other")
        if ia["type"] == "tree":
            out["items"].append({"item": name, "type": "tree", **_tree_diff(vault, ia, ib, path)})
        elif ia["type"] == "image":
            out["items"].append({"item": name, "type": "image", **_image_diff(vault, ia, ib)})
        else:
            out["items"].append({"item": name, "type": ia["type"], "changed": ia["map"] != ib["map"]})
    return out


def _entries(vault: Vault, item: Item, path: str | None) -> Iterator[TreeEntry]:
    rel = path_under(path, item.get("root", item["name"])) if path else None
    if path and rel is None:
        return
    for e in iter_tree(item, lambda c: vault.read_chunk(c, "listing")):
        if rel is None or selected(e["p"], [rel]):
            yield e


def _tree_diff(vault: Vault, ia: Item, ib: Item, path: str | None) -> dict:
    added, removed, modified, metadata = [], [], [], []
    ea, eb = _entries(vault, ia, path), _entries(vault, ib, path)
    x, y = next(ea, None), next(eb, None)
    while x is not None or y is not None:  # both listings are in path order: a merge join
        if y is None or (x is not None and x["p"] < y["p"]):
            removed.append(x["p"])  # type: ignore[index]
            x = next(ea, None)
        elif x is None or y["p"] < x["p"]:
            added.append(y["p"])
            y = next(eb, None)
        else:
            if x.get("c") != y.get("c") or x.get("s") != y.get("s") or x.get("xs") != y.get("xs"):
                modified.append(x["p"])
            elif any(x.get(k) != y.get(k) for k in METADATA):
                metadata.append(x["p"])
            x, y = next(ea, None), next(eb, None)
    return {"added": added, "removed": removed, "modified": modified, "metadata_only": metadata}


def _image_diff(vault: Vault, ia: Item, ib: Item) -> dict:
    ma = load_image_map(ia, lambda c: vault.read_chunk(c, "block map"))
    mb = load_image_map(ib, lambda c: vault.read_chunk(c, "block map"))
    bs = ib["block_size"]
    if ia["block_size"] != bs:
        raise UsageError(f"item {ib['name']}: block sizes differ ({ia['block_size']} and {bs})")
    ranges: list[list[int]] = []
    n = max(len(ma), len(mb)) // ID_LEN
    for i in range(n):
        if ma[i * ID_LEN : (i + 1) * ID_LEN] != mb[i * ID_LEN : (i + 1) * ID_LEN]:
            if ranges and ranges[-1][0] + ranges[-1][1] == i * bs:
                ranges[-1][1] += bs
            else:
                ranges.append([i * bs, bs])
    size = ib.get("size", 0)
    for r in ranges:
        r[1] = max(0, min(r[1], size - r[0]))
    return {"size_from": ia.get("size"), "size_to": size, "changed_ranges": ranges,
            "changed_bytes": sum(r[1] for r in ranges)}
