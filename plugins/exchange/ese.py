"""What dobaas reads itself in an Exchange backup, to check the copy before it is published (what ``eseutil /mh``
and ``eseutil /ml`` would say): the ESE database header of the EDB (signature, header checksum, file type, state,
page size, the range of log generations the database needs) and the generations of the transaction logs by
their names (``E00`` + 8 hex digits, ``E00.log`` the current one). Offsets: the EDB format as documented by the
libesedb project; the header checksum is ESE's XOR checksum of the header page."""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass

SIGNATURE = 0x89ABCDEF
STATES = {1: "Just Created", 2: "Dirty Shutdown", 3: "Clean Shutdown", 4: "Being Converted", 5: "Force Detach"}
HEADER_READ = 4096  # enough for every field read; the checksum covers the whole header page (page size)


class EseError(Exception):
    """The EDB header is not what ESE writes: a damaged or partial copy."""


@dataclass(frozen=True)
class EdbHeader:
    state: str
    page_size: int
    format_version: int
    format_revision: int
    log_required: tuple[int, int]  # (lowest, highest) generation the database needs to be consistent

    def as_meta(self) -> dict:
        low, high = self.log_required
        return {"state": self.state, "page_size": self.page_size,
                "format": f"0x{self.format_version:x},{self.format_revision}",
                "log_required": [low, high], "log_required_hex": f"0x{low:X}-0x{high:X}"}


def xor_checksum(page: bytes) -> int:
    """ESE's legacy header checksum: the 32-bit words after the checksum field XORed together with the
    signature as the seed."""
    words = struct.unpack(f"<{(len(page) - 4) // 4}I", page[4 : 4 + (len(page) - 4) // 4 * 4])
    acc = SIGNATURE
    for w in words:
        acc ^= w
    return acc


def parse_header(page: bytes) -> EdbHeader:
    """The header of an EDB from its first page (``page`` holds at least the header page)."""
    if len(page) < 512:
        raise EseError(f"the file is {len(page)} bytes long: not an ESE database")
    checksum, signature, version, file_type = struct.unpack_from("<IIII", page, 0)
    if signature != SIGNATURE:
        raise EseError(f"no ESE signature (0x{signature:08x} where 0x{SIGNATURE:08X} belongs)")
    if file_type != 0:
        raise EseError(f"file type {file_type}: not a database (a streaming file?)")
    (state,) = struct.unpack_from("<I", page, 52)
    revision, page_size = struct.unpack_from("<II", page, 232)
    if page_size not in (2048, 4096, 8192, 16384, 32768):
        raise EseError(f"page size {page_size} is not one ESE uses")
    if len(page) < page_size:
        raise EseError(f"the header page is cut ({len(page)} of {page_size} bytes)")
    if xor_checksum(page[:page_size]) != checksum:
        raise EseError(f"header checksum mismatch (stored 0x{checksum:08x}, computed "
                       f"0x{xor_checksum(page[:page_size]):08x})")
    low, high = struct.unpack_from("<II", page, 296)
    return EdbHeader(STATES.get(state, f"unknown ({state})"), page_size, version, revision, (low, high))


def log_generation(name: str, prefix: str) -> int | None:
    """The generation of a log file's name: ``E000000001A.log`` -> 26; None for the current ``E00.log``."""
    base = name.rsplit("/", 1)[-1]
    if base.lower() == f"{prefix}.log".lower():
        return None
    m = re.fullmatch(re.escape(prefix) + r"([0-9A-Fa-f]{8})\.log", base, re.I)
    if not m:
        raise EseError(f"{base} is not a transaction log of prefix {prefix}")
    return int(m.group(1), 16)


def missing_generations(header: EdbHeader, generations: set[int], current: int | None) -> list[str]:
    """What soft recovery would lack (``eseutil /r``): every generation from the lowest the database requires
    up to the one before the current log, the current log itself (generation ``current``, None when it is not
    there), which must be at least the highest one required. Empty: replayable."""
    low, high = header.log_required
    if current is None:
        return ["the current log (prefix.log)"]
    out = [f"0x{g:X}" for g in range(max(low, 1), current) if g not in generations]
    if current < high:
        out.append(f"0x{high:X} (the current log is only at 0x{current:X})")
    return out
