"""Writes a differencing VHDX (a child of an existing VHDX), as Hyper-V does for a checkpoint's disk: no tool on
Debian makes one (qemu-img has no backing file for VHDX), so the tests write it from the VHDX specification
(MS-VHDX v1): file identifier, two headers, two region tables, a metadata region with a parent locator, a BAT,
and payload blocks. Blocks the child holds are FULLY_PRESENT; every other block is NOT_PRESENT and reads from
the parent through a present, all-clear sector bitmap (libvhdi, like Hyper-V's files, wants the bitmap).
Only what the tests need: no log, 1 MiB blocks, 512-byte logical sectors."""

from __future__ import annotations

import struct
import uuid

KiB, MiB = 1024, 1024 * 1024
BLOCK = 1 * MiB
SECTOR = 512
CHUNK_RATIO = (2**23 * SECTOR) // BLOCK
BAT_GUID = uuid.UUID("2DC27766-F623-4200-9D64-115E9BFD4A08")
META_GUID = uuid.UUID("8B7CA206-4790-4B9A-B8FE-575F050F886E")
FILE_PARAMS = uuid.UUID("CAA16737-FA36-4D43-B3B6-33F0AA44E76B")
DISK_SIZE = uuid.UUID("2FA54224-CD1B-4876-B211-5DBED83BF4B8")
PAGE83 = uuid.UUID("BECA12AB-B2E6-4523-93EF-C309E000C746")
LOGICAL = uuid.UUID("8141BF1D-A96F-4709-BA47-F233A8FAAB5F")
PHYSICAL = uuid.UUID("CDA348C7-445D-4471-9CC9-E9885251C556")
PARENT_LOCATOR = uuid.UUID("A8D35F2D-B30B-454D-ABF7-D3D84834AB0C")
VHDX_LOCATOR_TYPE = uuid.UUID("B04AEFB7-D19E-4A81-B789-25B8E9445913")
FULLY_PRESENT = 6

_TABLE = []
for _n in range(256):
    _c = _n
    for _ in range(8):
        _c = (_c >> 1) ^ 0x82F63B78 if _c & 1 else _c >> 1
    _TABLE.append(_c)


def crc32c(data: bytes) -> int:
    c = 0xFFFFFFFF
    for b in data:
        c = _TABLE[(c ^ b) & 0xFF] ^ (c >> 8)
    return c ^ 0xFFFFFFFF


def _checksummed(buf: bytearray, at: int = 4) -> bytes:
    struct.pack_into("<I", buf, at, 0)
    struct.pack_into("<I", buf, at, crc32c(bytes(buf)))
    return bytes(buf)


def _header(seq: int, data_write: uuid.UUID) -> bytes:
    h = bytearray(4 * KiB)
    struct.pack_into("<4sIQ16s16s16sHHIQ", h, 0, b"head", 0, seq, uuid.uuid4().bytes_le, data_write.bytes_le,
                     b"\0" * 16, 0, 1, MiB, MiB)
    return _checksummed(h)


def _region_table(meta_off: int, bat_off: int, bat_len: int) -> bytes:
    r = bytearray(64 * KiB)
    struct.pack_into("<4sIII", r, 0, b"regi", 0, 2, 0)
    struct.pack_into("<16sQII", r, 16, BAT_GUID.bytes_le, bat_off, bat_len, 1)
    struct.pack_into("<16sQII", r, 48, META_GUID.bytes_le, meta_off, MiB, 1)
    return _checksummed(r)


def _parent_locator(entries: dict[str, str]) -> bytes:
    head = struct.pack("<16sHH", VHDX_LOCATOR_TYPE.bytes_le, 0, len(entries))
    table_len = 12 * len(entries)
    strings, table = b"", b""
    base = len(head) + table_len
    for key, value in entries.items():
        k, v = key.encode("utf-16-le"), value.encode("utf-16-le")
        ko = base + len(strings)
        strings += k
        vo = base + len(strings)
        strings += v
        table += struct.pack("<IIHH", ko, vo, len(k), len(v))
    return head + table + strings


def _metadata(size: int, parent: dict[str, str]) -> bytes:
    items = [(FILE_PARAMS, struct.pack("<II", BLOCK, 2), 4),  # HasParent
             (DISK_SIZE, struct.pack("<Q", size), 6), (PAGE83, uuid.uuid4().bytes_le, 6),
             (LOGICAL, struct.pack("<I", SECTOR), 6), (PHYSICAL, struct.pack("<I", 4096), 6),
             (PARENT_LOCATOR, _parent_locator(parent), 4)]
    m = bytearray(MiB)
    struct.pack_into("<8sHH", m, 0, b"metadata", 0, len(items))
    data_off = 64 * KiB
    for i, (guid, data, flags) in enumerate(items):
        struct.pack_into("<16sIII", m, 32 + 32 * i, guid.bytes_le, data_off, len(data), flags)
        m[data_off : data_off + len(data)] = data
        data_off += (len(data) + 4095) // 4096 * 4096
    return bytes(m)


def write_child(path: str, size: int, parent_linkage: str, parent_paths: dict[str, str],
                blocks: dict[int, bytes]) -> None:
    """A differencing VHDX at ``path`` of a ``size``-byte disk whose parent is named by ``parent_paths``
    (relative_path, absolute_win32_path…) and linked by ``parent_linkage`` (the parent's data write GUID, as
    "{…}"); ``blocks`` {block number: its whole BLOCK bytes} are held by the child, the rest read from the parent."""
    payload_blocks = -(-size // BLOCK)
    bitmap_blocks = -(-payload_blocks // CHUNK_RATIO)
    entries = bitmap_blocks * (CHUNK_RATIO + 1)
    bat_len = (entries * 8 + MiB - 1) // MiB * MiB
    meta_off, bat_off = 2 * MiB, 3 * MiB
    data_off = bat_off + bat_len
    bat = bytearray(bat_len)
    payload = bytearray()
    for k in range(bitmap_blocks):  # sector bitmaps present and all clear: every sector not held here is the parent's
        struct.pack_into("<Q", bat, 8 * (k * (CHUNK_RATIO + 1) + CHUNK_RATIO),
                         FULLY_PRESENT | ((data_off + len(payload)) // MiB) << 20)
        payload += bytes(MiB)
    for n in sorted(blocks):
        assert len(blocks[n]) == BLOCK
        index = n + n // CHUNK_RATIO
        struct.pack_into("<Q", bat, 8 * index, FULLY_PRESENT | ((data_off + len(payload)) // MiB) << 20)
        payload += blocks[n]
    data_write = uuid.uuid4()
    with open(path, "wb") as f:
        ident = bytearray(64 * KiB)
        ident[:8] = b"vhdxfile"
        ident[8 : 8 + 24] = "dobaas tests".encode("utf-16-le")
        f.write(ident)
        f.write(_header(1, data_write).ljust(64 * KiB, b"\0"))
        f.write(_header(2, data_write).ljust(64 * KiB, b"\0"))
        table = _region_table(meta_off, bat_off, bat_len)
        f.write(table)
        f.write(table)
        f.write(b"\0" * (MiB - f.tell()))  # up to the (empty) log
        f.write(b"\0" * MiB)  # the log region (no log: LogGuid is zero)
        f.write(_metadata(size, {"parent_linkage": parent_linkage, **parent_paths}))
        f.write(bat)
        f.write(payload)
