"""Restore a block image item to a file or a block device, and compare one with a snapshot. Chunks are fetched
by ranged reads that cover neighbours in a pack, decoded on worker threads, written with pwrite, and flushed in
the background so write-back overlaps decoding. Every chunk is authenticated and re-hashed."""

from __future__ import annotations

import os
import stat
import threading
from collections import defaultdict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from orchestrator.errors import IntegrityError, UsageError
from orchestrator.vault.backend import ObjectMissing
from orchestrator.vault.crypto import ID_LEN, ZERO_ID
from orchestrator.vault.pack import pack_path
from orchestrator.vault.repository import Vault
from orchestrator.vault.snapshot import Item, load_image_map

FLUSH_EVERY = 128 * 1024 * 1024  # start write-back of restored data while decoding continues
RESTORE_SPAN = 8 * 1024 * 1024  # one ranged read covers at most this much of a pack
RESTORE_GAP = 256 * 1024  # chunks closer than this in a pack are fetched in one read

Progress = Callable[[int], None]


def compare_image(vault: Vault, item: Item, path: str, what: str = "") -> list[int]:
    """Re-read ``path`` and check every block against the item's block map (keyed hash, or zeros for holes):
    the proof that a restored disk holds exactly the snapshot's content. Returns the offsets that differ."""
    bmap = load_image_map(item, lambda cid: vault.read_chunk(cid, f"{what or item['name']} map"))
    bs, size = item["block_size"], item["size"]
    if os.path.getsize(path) != size and not stat.S_ISBLK(os.stat(path).st_mode):
        return [min(os.path.getsize(path), size)]
    bad: list[int] = []
    buf = bytearray(bs)
    view = memoryview(buf)
    zeros = bytes(bs)
    with open(path, "rb", buffering=0) as f:
        for i in range(len(bmap) // ID_LEN):
            n = f.readinto(view)
            want = bytes(bmap[i * ID_LEN : (i + 1) * ID_LEN])
            block = view[: min(bs, size - i * bs)]
            ok = (block == zeros[: len(block)]) if want == ZERO_ID else vault.cipher.chunk_id(block) == want
            if not ok or n < len(block):
                bad.append(i * bs)
    return bad


class BackgroundFlusher:
    """Calls fdatasync in its own thread every FLUSH_EVERY bytes, so the restore's final fsync (durability
    before we say "restored") finds little left to write instead of the whole image."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self._pending = 0
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._done = False
        self._thread = threading.Thread(target=self._run, name="restore-flush", daemon=True)
        self._thread.start()

    def wrote(self, nbytes: int) -> None:
        with self._lock:
            self._pending += nbytes
            if self._pending >= FLUSH_EVERY:
                self._pending = 0
                self._wake.set()

    def _run(self) -> None:
        while True:
            self._wake.wait()
            self._wake.clear()
            if self._done:
                return
            try:
                os.fdatasync(self.fd)
            except OSError:
                return  # the final fsync reports the error

    def close(self) -> None:
        self._done = True
        self._wake.set()
        self._thread.join()


@dataclass
class RestoreStats:
    bytes_written: int = 0
    chunks_read: int = 0
    bytes_fetched: int = 0


def restore_image(
    vault: Vault,
    item: Item,
    output: str,
    overwrite: bool = False,
    workers: int = 2,
    progress: Progress | None = None,
    what: str = "",
) -> RestoreStats:
    """Write an image item to ``output`` (file or block device); every chunk is authenticated and re-hashed."""
    what = what or f"item {item['name']}"
    if item["type"] != "image":
        raise UsageError(f"{what} is a {item['type']}, not a disk image")
    bmap = load_image_map(item, lambda cid: vault.read_chunk(cid, f"{what} map"))
    bs, size = item["block_size"], item["size"]
    is_device = os.path.exists(output) and stat.S_ISBLK(os.stat(output).st_mode)
    flags = os.O_WRONLY | os.O_CREAT | (0 if is_device else (os.O_TRUNC if overwrite else os.O_EXCL))
    try:
        fd = os.open(output, flags, 0o600)
    except FileExistsError:
        raise UsageError(f"{output} already exists (use --overwrite to replace it)") from None
    ok = False
    try:
        if not is_device:
            os.ftruncate(fd, size)  # holes stay holes: the file is sparse where the image was zero
        stats = _write_blocks(vault, bmap, bs, size, fd, is_device, workers, progress, what)
        os.fsync(fd)
        ok = True
        return stats
    finally:
        os.close(fd)
        if not ok and not is_device:
            os.unlink(output)


def _write_blocks(
    vault: Vault, bmap: bytearray, bs: int, size: int, fd: int, write_zeros: bool, workers: int,
    progress: Progress | None, what: str,
) -> RestoreStats:
    index = vault.load_index()
    positions: dict[bytes, list[int]] = defaultdict(list)
    zero_blocks: list[int] = []
    for i in range(len(bmap) // ID_LEN):
        cid = bytes(bmap[i * ID_LEN : (i + 1) * ID_LEN])
        if cid == ZERO_ID:
            zero_blocks.append(i)
        else:
            positions[cid].append(i)
    by_pack: dict[str, list[tuple[int, int, bytes]]] = defaultdict(list)
    for cid, blocks in positions.items():
        loc = index.get(cid)
        if loc is None:
            raise IntegrityError(f"{what}: chunk for offset {blocks[0] * bs} is missing from the vault")
        by_pack[loc.pack].append((loc.offset, loc.length, cid))
    tasks: list[tuple[str, list[tuple[int, int, bytes]]]] = []
    for pack, entries in by_pack.items():
        entries.sort()
        run: list[tuple[int, int, bytes]] = []
        for e in entries:
            if run and (e[0] - (run[-1][0] + run[-1][1]) > RESTORE_GAP or e[0] + e[1] - run[0][0] > RESTORE_SPAN):
                tasks.append((pack, run))
                run = []
            run.append(e)
        tasks.append((pack, run))
    stats = RestoreStats()
    lock = threading.Lock()
    flusher = BackgroundFlusher(fd)

    def fetch(task: tuple[str, list[tuple[int, int, bytes]]]) -> None:
        pack, run = task
        start = run[0][0]
        span = run[-1][0] + run[-1][1] - start
        try:
            data = vault.backend.get_range(pack_path(pack), start, span)
        except ObjectMissing:
            raise IntegrityError(f"{what}: pack {pack[:12]} is missing (chunk for offset "
                                 f"{positions[run[0][2]][0] * bs})") from None
        if len(data) != span:
            raise IntegrityError(f"{what}: pack {pack[:12]} is truncated (chunk for offset "
                                 f"{positions[run[-1][2]][0] * bs})")
        view = memoryview(data)
        written = 0
        for off, length, cid in run:
            blocks = positions[cid]
            plain = vault.decoder.decode(
                view[off - start : off - start + length], index.chunks[cid].entry(cid),
                f"{what} at offset {blocks[0] * bs}",
            )
            for b in blocks:
                os.pwrite(fd, plain, b * bs)
                written += len(plain)
        with lock:
            stats.bytes_written += written
            stats.chunks_read += len(run)
            stats.bytes_fetched += span
        flusher.wrote(written)
        if progress:
            progress(written)

    try:
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="restore") as pool:
            for f in [pool.submit(fetch, t) for t in tasks]:
                f.result()
    finally:
        flusher.close()
    if write_zeros:
        zeros = bytes(bs)
        for b in zero_blocks:
            os.pwrite(fd, zeros[: min(bs, size - b * bs)], b * bs)
    if progress:
        progress(sum(min(bs, size - b * bs) for b in zero_blocks))
    return stats

