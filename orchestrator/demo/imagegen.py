"""Synthetic disk images that look like real ones: holes, compressible system files, incompressible data.

Compressible content is taken from real files on this machine at unaligned offsets, so fixed-size blocks cannot
deduplicate it by accident; writes between backups are scattered and their extents are returned like a
hypervisor's changed-block list.
"""

from __future__ import annotations

import os
import random

from orchestrator.plugin.blocks import Extent

TEXT_ROOTS = ("/usr/share/perl", "/usr/share/perl5", "/usr/lib/python3", "/usr/share/doc", "/usr/share/common-licenses",
              "/usr/include", "/etc")
_TEXT_SUFFIXES = (".py", ".pm", ".pl", ".h", ".txt", ".conf", ".pod", "copyright", ".html", ".md", ".rst", ".c")


def text_pool(limit: int = 48 * 2**20) -> bytes:
    """Concatenated real text files from this system (at least 1 MiB even on a bare machine)."""
    parts, total = [], 0
    for root in TEXT_ROOTS:
        for dirpath, _dirs, files in os.walk(root):
            for f in sorted(files):
                if not f.endswith(_TEXT_SUFFIXES):
                    continue
                try:
                    with open(os.path.join(dirpath, f), "rb") as fh:
                        data = fh.read(2**20)
                except OSError:
                    continue
                parts.append(data)
                total += len(data)
                if total >= limit:
                    return b"".join(parts)
    pool = b"".join(parts)
    while len(pool) < 2**20:  # a bare container: still compressible, still varied
        pool += b"".join(b"line %d of a generated log, status=ok value=%d\n" % (i, i * 7) for i in range(20000))
    return pool


def make_image(path: str, size: int, seed: int = 1, zero: float = 0.4, text: float = 0.3) -> None:
    """Write a sparse image of ``size`` bytes: about ``zero`` holes, ``text`` compressible, the rest random."""
    rng = random.Random(seed)
    pool = text_pool()
    with open(path, "wb") as f:
        f.truncate(size)
        pos = 0
        while pos < size:
            length = min(size - pos, rng.randrange(256 * 1024, 4 * 2**20))
            r = rng.random()
            if r < zero:
                pass  # hole
            elif r < zero + text:
                f.seek(pos)
                left = length
                while left:
                    start = rng.randrange(0, len(pool) - 1)
                    piece = pool[start : start + left]
                    f.write(piece)
                    left -= len(piece)
            else:
                f.seek(pos)
                f.write(rng.randbytes(length))
            pos += length


def scatter_writes(path: str, fraction: float, write_size: int = 64 * 1024, seed: int = 2) -> list[Extent]:
    """Overwrite ``fraction`` of the image with random data in scattered 4 KiB-aligned writes; return extents."""
    rng = random.Random(seed)
    size = os.path.getsize(path)
    count = max(1, round(size * fraction / write_size))
    extents: list[Extent] = []
    with open(path, "r+b") as f:
        for _ in range(count):
            off = rng.randrange(0, (size - write_size) // 4096) * 4096
            f.seek(off)
            f.write(rng.randbytes(write_size))
            extents.append((off, write_size))
        f.flush()
        os.fsync(f.fileno())
    return extents
