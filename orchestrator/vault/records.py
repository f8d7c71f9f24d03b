"""The vault's typed records: a snapshot's items and a tree listing's entries (the formats are described in
docs/vault-format.md §8). TypedDicts: they are stored and read as JSON, and mypy checks every key used."""

from __future__ import annotations

from typing import TypedDict

Refs = list[list]  # [[chunk id hex, length], …]


class TreeEntry(TypedDict, total=False):
    """One entry of a tree listing (the module docstring says what each short key holds)."""

    p: str
    t: str
    m: int
    u: int
    g: int
    U: str
    G: str
    s: int
    mt: int
    ct: int
    i: int
    dv: int
    n: int
    rd: int
    l: str  # noqa: E741  (the format's key)
    x: dict[str, str]
    c: Refs
    e: str
    w: str
    a: int
    sd: str
    xs: dict[str, Refs]
    xn: list[str]  # stream names a source lists during the walk; replaced by xs once read


class Item(TypedDict, total=False):
    """One item of a snapshot: what the vault stores for one image, stream or tree (see the module docstring)."""

    name: str
    type: str  # "image" | "stream" | "tree"
    size: int  # bytes: the image's size, the stream's length, the tree's file bytes
    map: list[str]  # hex ids of the meta chunks: block map / stream map / listing pieces
    block_size: int  # image
    capture: str  # image: "full" | "incremental" | "dedup-full"
    root: str  # tree: where it was captured from ("/srv/docs", "smb://h/share")
    entries: int  # tree
    errors: int  # tree: entries that could not be read
