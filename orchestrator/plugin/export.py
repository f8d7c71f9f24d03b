"""How a snapshot leaves the service in standard formats (`dobaas export`, the contract's reversibility clause):
each plugin says which files an export of its snapshots holds and how a person reads each of them with common
tools. The core writes the data (tar archives, disk images in the chosen format, stored streams as they are);
the plugin adds the documents only it can make (a VM's configuration in its hypervisor's own format)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

TREE_FORMATS = ("tar", "dir")
IMAGE_FORMATS = ("raw", "qcow2", "vhdx", "vmdk")
#: a snapshot's items as plugins see them (the vault's item records, read-only)
Items = Sequence[Mapping[str, Any]]


@dataclass(frozen=True)
class HowToRead:
    """One paragraph of the export's LISEZMOI.txt / README.txt about one kind of file."""

    fr: str
    en: str


@dataclass
class ExportPart:
    """One file (or, for a tree exported as a directory, one folder) of a snapshot's export.

    ``item``: the stored item whose data it is (``kind`` tree, image or stream); or ``content``: a document the
    plugin made from the snapshot's metadata (``kind`` document)."""

    path: str  # relative to the snapshot's folder in the export; "/" separated, no ".."
    kind: str  # tree | image | stream | document
    item: str | None = None
    format: str = ""  # tree: tar | dir; image: raw | qcow2 | vhdx | vmdk; stream/document: a short label
    content: bytes | None = None
    how: HowToRead | None = None  # None: the core's text for the format


def item_file_name(name: str) -> str:
    """A stored item's name as a relative file path: '/srv/docs' -> 'srv/docs', 'smb://fs1/compta' ->
    'fs1/compta', '' -> 'root'."""
    name = name.split("://", 1)[-1]
    parts = [p for p in name.replace("\\", "/").split("/") if p and p not in (".", "..")]
    return "/".join(parts) or "root"


def default_parts(items: Items, tree_format: str, image_format: str) -> list[ExportPart]:
    """The core's export of a snapshot's items: trees as tar archives (or directories), images in the chosen
    format, streams as stored. Plugins extend or relabel this list."""
    out: list[ExportPart] = []
    for it in items:
        name, kind = it["name"], it["type"]
        if kind == "tree":
            base = item_file_name(it.get("root", name))
            out.append(ExportPart(base + (".tar" if tree_format == "tar" else ""), "tree", name, tree_format))
        elif kind == "image":
            out.append(ExportPart(f"{item_file_name(name)}.{image_format}", "image", name, image_format))
        elif kind == "stream":
            out.append(ExportPart(item_file_name(name), "stream", name, "stored"))
    return out


def labelled_parts(items: Items, tree_format: str, image_format: str, label: str, how: HowToRead) -> list[ExportPart]:
    """The core's parts, every one labelled as the product's own backup files (SQL Server .bak, RMAN pieces…)."""
    parts = default_parts(items, tree_format, image_format)
    for p in parts:
        p.format, p.how = label, how
    return parts
