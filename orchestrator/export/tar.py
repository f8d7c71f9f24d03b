"""A tree item as a POSIX pax archive that GNU tar and bsdtar extract back to the tree as it was backed up:
owners (ids and names), modes, times to the nanosecond, extended attributes (``SCHILY.xattr.*``), POSIX ACLs
(``SCHILY.acl.access`` / ``.default``, the text form both tools read), hard links, devices, FIFOs, and sparse
files in the pax 1.0 sparse format (``GNU.sparse.*``). Names that are not UTF-8 keep their bytes
(``hdrcharset=BINARY``). Written as a stream: nothing is staged, memory stays flat.

A chunk damaged in the vault costs its file only: the archive stays well formed (the file's missing bytes are
zeros) and the file is reported as damaged."""

from __future__ import annotations

import base64
import os
import struct
from collections.abc import Callable
from dataclasses import dataclass, field

from orchestrator.errors import DobaasError
from orchestrator.restore.stream import Writable
from orchestrator.restore.tree import safe_rel
from orchestrator.vault.records import Item
from orchestrator.vault.tree import TreeEntry, iter_tree, printable

ReadChunk = Callable[[bytes, str], bytes]
SPARSE_MIN_HOLES = 64 * 1024  # files with fewer zero bytes in whole chunks are written dense

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


BLOCK = 512
_TYPEFLAG = {"d": b"5", "l": b"2", "h": b"1", "c": b"3", "b": b"4", "p": b"6", "f": b"0"}
_OCTAL_MAX = {8: 0o7777777, 12: 0o77777777777}


def _pax_time(ns: int) -> bytes:
    return b"%d.%09d" % (ns // 1_000_000_000, ns % 1_000_000_000)


def _raw(text: str) -> bytes:
    """A name as its original bytes (not-UTF-8 names are kept as surrogates)."""
    return text.encode("utf-8", "surrogateescape")


def _records(pax: list[tuple[bytes, bytes]]) -> bytes:
    """pax extended header records: "LEN KEY=VALUE\n", LEN counting itself."""
    out = []
    for key, value in pax:
        body = b" " + key + b"=" + value + b"\n"
        n = len(body) + 1
        while len(str(n)) + len(body) != n:
            n = len(str(n)) + len(body)
        out.append(str(n).encode() + body)
    return b"".join(out)


def _header(name: bytes, mode: int, uid: int, gid: int, size: int, mtime: int, flag: bytes, link: bytes = b"",
            uname: bytes = b"", gname: bytes = b"", dev: tuple[int, int] = (0, 0)) -> bytes:
    """One ustar header block (fields that do not fit are carried by the pax header before it)."""

    def num(v: int, width: int) -> bytes:
        v = v if 0 <= v <= _OCTAL_MAX.get(width, 0o7777777) else 0
        return b"%0*o\0" % (width - 1, v)

    h = bytearray(BLOCK)
    h[0:100] = name[:100].ljust(100, b"\0")
    h[100:108] = num(mode, 8)
    h[108:116] = num(uid, 8)
    h[116:124] = num(gid, 8)
    h[124:136] = num(size, 12)
    h[136:148] = num(mtime, 12)
    h[148:156] = b" " * 8
    h[156:157] = flag
    h[157:257] = link[:100].ljust(100, b"\0")
    h[257:265] = b"ustar\x0000"
    h[265:297] = uname[:32].ljust(32, b"\0")
    h[297:329] = gname[:32].ljust(32, b"\0")
    h[329:337] = num(dev[0], 8)
    h[337:345] = num(dev[1], 8)
    h[148:156] = b"%06o\0 " % sum(h)
    return bytes(h)


def _pad(n: int) -> bytes:
    return bytes(-n % BLOCK)


class _Member:
    """The headers of one archive member: a pax extended header (times to the nanosecond, long or non-ASCII
    names, xattrs, ACLs, sparse maps, big numbers), then the ustar header."""

    def __init__(self, e: TreeEntry, name: str) -> None:
        self.e, self.name = e, _raw(name)
        self.pax: list[tuple[bytes, bytes]] = [(b"mtime", _pax_time(e.get("mt", 0)))]
        self.link = _raw(e["l"]) if e["t"] in "lh" else b""
        for xname, b64 in sorted(e.get("x", {}).items()):
            value = base64.b64decode(b64)
            if xname in ("system.posix_acl_access", "system.posix_acl_default"):
                text = acl_text(value)
                if text:
                    self.pax.append((b"SCHILY.acl." + xname.rsplit("_", 1)[1].encode(), text.encode()))
                continue
            self.pax.append((b"SCHILY.xattr." + _raw(xname), value))

    def encode(self, size: int, stored_name: bytes | None = None) -> bytes:
        e, pax = self.e, list(self.pax)
        name = stored_name or self.name
        for key, value, limit in ((b"path", name, 100), (b"linkpath", self.link, 100),
                                  (b"uname", _raw(e.get("U") or ""), 32), (b"gname", _raw(e.get("G") or ""), 32)):
            if len(value) > limit or not value.isascii():
                pax.append((key, value))
        uid, gid = e.get("u", 0), e.get("g", 0)
        for key, v, width in ((b"uid", uid, 8), (b"gid", gid, 8), (b"size", size, 12)):
            if v > _OCTAL_MAX[width]:
                pax.append((key, str(v).encode()))
        if any(not _utf8(v) for _, v in pax):
            pax.insert(0, (b"hdrcharset", b"BINARY"))
        records = _records(pax)
        rd = e.get("rd", 0)
        ext = _header(b"PaxHeaders/" + name.rsplit(b"/", 1)[-1][:80], 0o644, 0, 0, len(records),
                      e.get("mt", 0) // 1_000_000_000, b"x")
        main = _header(name, e.get("m", 0o755 if e["t"] == "d" else 0o644) & 0o7777, uid, gid, size,
                       e.get("mt", 0) // 1_000_000_000, _TYPEFLAG[e["t"]], self.link, _raw(e.get("U") or ""),
                       _raw(e.get("G") or ""), (os.major(rd), os.minor(rd)) if e["t"] in "cb" else (0, 0))
        return ext + records + _pad(len(records)) + main


def _utf8(b: bytes) -> bool:
    try:
        b.decode()
        return True
    except UnicodeDecodeError:
        return False


def write_tar(read_chunk: ReadChunk, item: Item, read_meta: Callable[[bytes], bytes], out: Writable,
              is_zero: Callable[[str, int], bool], progress: Callable[[int], None] | None = None,
              top: str = "root", under: str = "") -> TarStats:
    """Write ``item`` (a tree) to ``out`` as a pax archive whose members are under one folder ``top`` (the
    item's root itself: extracting makes that folder, with its own owner, mode and times). ``under``: only that
    directory (or file) of the tree, named as it is in the tree (a download of one folder)."""
    st = TarStats()
    first_path: dict[str, str] = {}  # hard links: the original path of a multiply-linked file -> its member name
    depth = len(under.split("/")) if under else 0  # ``under`` as the catalog shows it: printable()
    for e in iter_tree(item, read_meta):
        if under:
            shown = printable(e["p"])
            if shown != under and not shown.startswith(under + "/"):
                continue
            if shown == under:  # the folder itself (first, in path order): its name as stored, bytes and all
                top = e["p"].rsplit("/", 1)[-1]
            e = {**e, "p": "/".join(e["p"].split("/")[depth:])}
            if e["t"] == "h":
                inside = printable(e["l"]).startswith(under + "/")
                e["l"] = "/".join(e["l"].split("/")[depth:]) if inside else e["l"]
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
            if e["l"] not in first_path:  # the first path of this file was not backed up
                st.skipped.append(f"{printable(p)}: its first link is missing, stored as a hard link anyway")
            e = {**e, "l": first_path.get(e["l"], f"{top}/{e['l']}")}
        member = _Member(e, name + "/" if kind == "d" else name)
        st.entries += 1
        if kind != "f":
            out.write(member.encode(0))
            continue
        if e.get("n", 1) > 1:
            first_path[p] = name
        refs: list = e.get("c", [])
        size = sum(length for _, length in refs)
        keep = [not is_zero(h, n) for h, n in refs]
        segs = _data_segments(refs, keep, size)
        stored = sum(n for _, n in segs)
        if size - stored >= SPARSE_MIN_HOLES:
            text = b"".join(b"%d\n" % n for n in [len(segs), *[v for seg in segs for v in seg]])
            mapblock = text + _pad(len(text))
            d, b = os.path.split(name)
            member.pax += [(b"GNU.sparse.major", b"1"), (b"GNU.sparse.minor", b"0"),
                           (b"GNU.sparse.name", _raw(name)), (b"GNU.sparse.realsize", b"%d" % size)]
            stored += len(mapblock)
            out.write(member.encode(stored, _raw(os.path.join(d, "GNUSparseFile.0", b))))
            out.write(mapblock)
            st.sparse_files += 1
        else:
            segs = [[0, size]]
            stored = size
            out.write(member.encode(size))
        damage = _write_content(read_chunk, out, refs, keep, segs, printable(p), progress)
        out.write(_pad(stored))
        st.files += 1
        st.bytes += size
        if damage:
            st.damaged.append(f"{printable(p)}: {damage}")
    out.write(bytes(2 * BLOCK))  # end of archive
    return st


def _data_segments(refs: list, keep: list[bool], size: int) -> list[list[int]]:
    """The file's data regions for a sparse map: the kept (non-zero) chunks, widened to 512-byte blocks and merged.
    GNU tar reads each region's data in whole blocks (a region ending inside a block consumes the whole block)
    while Python's tarfile and bsdtar read regions back to back: block-aligned regions mean the same to all three.
    The map ends at the file's size (an empty last region for a trailing hole)."""
    segs: list[list[int]] = []
    off = 0
    for (_h, length), k in zip(refs, keep, strict=True):
        if k and length:
            start, end = off - off % BLOCK, min(size, off + length + (-(off + length) % BLOCK))
            if segs and segs[-1][0] + segs[-1][1] >= start:
                segs[-1][1] = max(segs[-1][1], end - segs[-1][0])
            else:
                segs.append([start, end - start])
        off += length
    if not segs or segs[-1][0] + segs[-1][1] != size:
        segs.append([size, 0])
    return segs


def _write_content(read_chunk: ReadChunk, out: Writable, refs: list, keep: list[bool], segs: list[list[int]],
                   shown: str, progress: Callable[[int], None] | None) -> str | None:
    """The bytes of the file inside ``segs`` (sorted regions), in order: chunks are read only where a region
    needs them (a chunk known to be zeros is not read); a damaged chunk (and the rest of the file) is written as
    zeros so the archive stays well formed. Returns the damage, if any."""
    damage = None
    off = 0
    si = 0
    for (hexid, length), k in zip(refs, keep, strict=True):
        end = off + length
        data: bytes | None = None
        while si < len(segs) and segs[si][0] < end:
            s0, s1 = max(off, segs[si][0]), min(end, segs[si][0] + segs[si][1])
            if s0 < s1:
                if data is None and damage is None and k:
                    try:
                        data = read_chunk(bytes.fromhex(hexid), f"{shown} at offset {off}")
                    except DobaasError as err:
                        damage = str(err)
                out.write(data[s0 - off:s1 - off] if data is not None else bytes(s1 - s0))
            if segs[si][0] + segs[si][1] > end:
                break
            si += 1
        off = end
        if progress:
            progress(length)
    return damage
