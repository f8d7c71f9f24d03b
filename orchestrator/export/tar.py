"""A tree item as a POSIX pax archive that GNU tar and bsdtar extract back to the tree as it was backed up:
owners (ids and names), modes, times to the nanosecond, extended attributes (``SCHILY.xattr.*``), POSIX ACLs
(``SCHILY.acl.access`` / ``.default``, the text form both tools read), hard links, devices, FIFOs, and sparse
files in the pax 1.0 sparse format (``GNU.sparse.*``). Names that are not UTF-8 keep their bytes
(``hdrcharset=BINARY``). Written as a stream: nothing is staged, memory stays flat.

A chunk damaged in the vault costs its file only: the archive stays well formed (the file's missing bytes are
zeros) and the file is reported as damaged."""

from __future__ import annotations

import base64
import functools
import os
import struct
import tarfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import BinaryIO

from orchestrator.errors import DobaasError
from orchestrator.restore.tree import safe_rel
from orchestrator.vault.records import Item
from orchestrator.vault.tree import TreeEntry, iter_tree, printable

ReadChunk = Callable[[bytes, str], bytes]
SPARSE_MIN_HOLES = 64 * 1024  # files with fewer zero bytes in whole chunks are written dense

_TYPES = {"d": tarfile.DIRTYPE, "l": tarfile.SYMTYPE, "h": tarfile.LNKTYPE, "c": tarfile.CHRTYPE,
          "b": tarfile.BLKTYPE, "p": tarfile.FIFOTYPE, "f": tarfile.REGTYPE}
_ACL_ENTRY = struct.Struct("<HHI")
_ACL_TAGS = {1: "user", 2: "user", 4: "group", 8: "group", 0x10: "mask", 0x20: "other"}
_NAMED = (2, 8)


@dataclass
class TarStats:
    entries: int = 0
    files: int = 0
    bytes: int = 0  # file content written
    sparse_files: int = 0
    skipped: list[str] = field(default_factory=list)  # sockets, files that were not backed up, unsafe paths
    damaged: list[str] = field(default_factory=list)


def acl_text(blob: bytes) -> str | None:
    """A ``system.posix_acl_*`` xattr value as the ACL text GNU tar writes (one entry per line, numeric ids)."""
    if len(blob) < 4 or struct.unpack_from("<I", blob)[0] != 2 or (len(blob) - 4) % _ACL_ENTRY.size:
        return None
    lines = []
    for off in range(4, len(blob), _ACL_ENTRY.size):
        tag, perm, ident = _ACL_ENTRY.unpack_from(blob, off)
        if tag not in _ACL_TAGS:
            return None
        who = str(ident) if tag in _NAMED else ""
        rwx = ("r" if perm & 4 else "-") + ("w" if perm & 2 else "-") + ("x" if perm & 1 else "-")
        lines.append(f"{_ACL_TAGS[tag]}:{who}:{rwx}")
    return "\n".join(lines) + "\n"


def _pax_time(ns: int) -> str:
    return f"{ns // 1_000_000_000}.{ns % 1_000_000_000:09d}"


class _Content:
    """``read(n)`` over a file's chunks (holes left out for sparse files); a damaged chunk turns into zeros and
    is recorded, so the archive stays readable."""

    def __init__(self, chunks: Iterator[tuple[int, Callable[[], bytes]]], prefix: bytes = b"") -> None:
        self._chunks = chunks
        self._buf = prefix
        self.damage: str | None = None

    def read(self, n: int = -1) -> bytes:
        while n < 0 or len(self._buf) < n:
            nxt = next(self._chunks, None)
            if nxt is None:
                break
            length, load = nxt
            if self.damage:
                self._buf += bytes(length)
                continue
            try:
                data = load()
            except DobaasError as e:
                self.damage = str(e)
                data = bytes(length)
            self._buf += data
        if n < 0:
            n = len(self._buf)
        out, self._buf = self._buf[:n], self._buf[n:]
        return out


def _info(e: TreeEntry, name: str) -> tarfile.TarInfo:
    ti = tarfile.TarInfo(name)
    ti.type = _TYPES[e["t"]]
    ti.mode = e.get("m", 0o755 if e["t"] == "d" else 0o644) & 0o7777
    ti.uid, ti.gid = e.get("u", 0), e.get("g", 0)
    ti.uname, ti.gname = e.get("U") or "", e.get("G") or ""
    mt = e.get("mt", 0)
    ti.mtime = mt // 1_000_000_000
    pax: dict[str, str] = {"mtime": _pax_time(mt)}
    if e["t"] in "lh":
        ti.linkname = e["l"]
    if e["t"] in "cb":
        ti.devmajor, ti.devminor = os.major(e.get("rd", 0)), os.minor(e.get("rd", 0))
    for xname, b64 in sorted(e.get("x", {}).items()):
        value = base64.b64decode(b64)
        if xname in ("system.posix_acl_access", "system.posix_acl_default"):
            text = acl_text(value)
            if text:
                pax["SCHILY.acl." + xname.rsplit("_", 1)[1]] = text
            continue
        pax["SCHILY.xattr." + xname] = value.decode("utf-8", "surrogateescape")
    ti.pax_headers = pax
    return ti


def write_tar(read_chunk: ReadChunk, item: Item, read_meta: Callable[[bytes], bytes], out: BinaryIO,
              is_zero: Callable[[str, int], bool], progress: Callable[[int], None] | None = None,
              top: str = "root") -> TarStats:
    """Write ``item`` (a tree) to ``out`` as a pax archive whose members are under one folder ``top`` (the
    item's root itself: extracting makes that folder, with its own owner, mode and times)."""
    st = TarStats()
    first_path: dict[str, str] = {}  # hard links: the original path of a multiply-linked file -> its member name
    with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT, encoding="utf-8",
                      errors="surrogateescape") as tar:
        for e in iter_tree(item, read_meta):
            p, kind = e["p"], e["t"]
            if not safe_rel(p):
                st.skipped.append(f"{printable(p)}: unsafe path in the snapshot")
                continue
            if kind == "s":
                st.skipped.append(f"{printable(p)}: a socket (tar cannot hold one; programs recreate them)")
                continue
            if "e" in e and kind == "f":
                st.skipped.append(f"{printable(p)}: was not backed up ({e['e']})")
                continue
            name = f"{top}/{p}" if p else top
            if kind == "h":
                if e["l"] not in first_path:  # the first path of this file was not backed up: keep the content
                    st.skipped.append(f"{printable(p)}: its first link is missing, stored as a hard link anyway")
                e = {**e, "l": first_path.get(e["l"], f"{top}/{e['l']}")}
            ti = _info(e, name)
            st.entries += 1
            if kind != "f":
                tar.addfile(ti)
                continue
            if e.get("n", 1) > 1:
                first_path[p] = name
            refs: list = e.get("c", [])
            size = sum(length for _, length in refs)
            holes = [is_zero(h, n) for h, n in refs]
            hole_bytes = sum(n for (h, n), z in zip(refs, holes, strict=True) if z)

            def chunks(keep: list[bool], refs: list = refs, p: str = p) -> Iterator[tuple[int, Callable[[], bytes]]]:
                off = 0
                for (hexid, length), k in zip(refs, keep, strict=True):
                    if k:
                        yield length, functools.partial(read_chunk, bytes.fromhex(hexid),
                                                        f"{printable(p)} at offset {off}")
                    off += length
                    if progress:
                        progress(length)

            if hole_bytes >= SPARSE_MIN_HOLES:
                segs: list[list[int]] = []
                off = 0
                for (_, length), z in zip(refs, holes, strict=True):
                    if not z:
                        if segs and segs[-1][0] + segs[-1][1] == off:
                            segs[-1][1] += length
                        else:
                            segs.append([off, length])
                    off += length
                if not segs or segs[-1][0] + segs[-1][1] != size:
                    segs.append([size, 0])  # the map ends at the file's size (a trailing hole)
                text = "".join(f"{n}\n" for n in [len(segs), *[v for s in segs for v in s]]).encode()
                mapblock = text + bytes(-len(text) % tarfile.BLOCKSIZE)
                d, b = os.path.split(name)
                ti.pax_headers = {**ti.pax_headers, "GNU.sparse.major": "1", "GNU.sparse.minor": "0",
                                  "GNU.sparse.name": name, "GNU.sparse.realsize": str(size)}
                ti.name = os.path.join(d, "GNUSparseFile.0", b)
                ti.size = len(mapblock) + size - hole_bytes
                body = _Content(chunks([not z for z in holes]), mapblock)
                st.sparse_files += 1
            else:
                ti.size = size
                body = _Content(chunks([True] * len(refs)))
            tar.addfile(ti, body)  # read(n) is all tarfile uses
            st.files += 1
            st.bytes += size
            if body.damage:
                st.damaged.append(f"{printable(p)}: {body.damage}")
    return st
