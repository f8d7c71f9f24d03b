"""The parallel capture pipeline: read -> zero check -> hash -> compress -> encrypt -> store, in bounded memory.

The calling thread reads runs of consecutive blocks into a fixed pool of segment buffers; worker threads take a
segment, detect all-zero blocks (stored as holes, never as chunks) and hand the others to the vault writer,
which hashes, deduplicates, compresses, encrypts and packs them. hashing, zstd and AES-GCM release the GIL, so
two cores are kept busy; memory is the segment pool plus the writer's pack buffers, whatever the image size.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

from orchestrator.errors import BadInput
from orchestrator.plugin.blocks import BlockReader
from orchestrator.vault.crypto import ID_LEN, ZERO_ID
from orchestrator.vault.writer import BackupWriter

SEGMENT_BYTES = 4 * 1024 * 1024
Progress = Callable[[int], None]


@dataclass
class CaptureStats:
    bytes_read: int = 0
    blocks_read: int = 0
    zero_blocks: int = 0  # holes in the resulting block map (read as zeros or skipped as sparse)


def _runs(blocks: Iterable[int], max_len: int) -> Iterator[tuple[int, int]]:
    """Group sorted block indices into (first, count) runs of at most ``max_len`` consecutive blocks."""
    first = prev = -2
    for b in blocks:
        if b == prev + 1 and b - first < max_len:
            prev = b
            continue
        if first >= 0:
            yield first, prev - first + 1
        first = prev = b
    if first >= 0:
        yield first, prev - first + 1


def capture_blocks(
    reader: BlockReader,
    blocks: Iterable[int],
    block_size: int,
    block_map: bytearray,
    writer: BackupWriter,
    workers: int = 2,
    progress: Progress | None = None,
) -> CaptureStats:
    """Read the given blocks of ``reader`` and write their chunk ids (or ZERO_ID) into ``block_map``."""
    size = reader.size
    seg_blocks = max(1, SEGMENT_BYTES // block_size)
    free: queue.Queue[bytearray] = queue.Queue()
    for _ in range(workers + 2):
        free.put(bytearray(seg_blocks * block_size))
    work: queue.Queue[tuple[int, int, bytearray, int] | None] = queue.Queue()
    stats = CaptureStats()
    errors: list[BaseException] = []
    stop = threading.Event()
    zeros = bytes(block_size)

    def worker() -> None:
        while True:
            item = work.get()
            if item is None:
                return
            first, count, buf, nbytes = item
            try:
                if not stop.is_set():
                    view = memoryview(buf)
                    for j in range(count):
                        off = j * block_size
                        end = min(off + block_size, nbytes)
                        pattern = zeros if end - off == block_size else zeros[: end - off]
                        # comparing with a preallocated zero block is the fastest zero test (~9 GB/s)
                        cid = ZERO_ID if buf.startswith(pattern, off, end) else writer.store(view[off:end])
                        pos = (first + j) * ID_LEN
                        block_map[pos : pos + ID_LEN] = cid
                    view.release()
                    if progress:
                        progress(nbytes)
            except BaseException as e:
                errors.append(e)
                stop.set()
            finally:
                free.put(buf)

    threads = [threading.Thread(target=worker, name=f"capture-{i}", daemon=True) for i in range(workers)]
    for t in threads:
        t.start()
    try:
        for first, count in _runs(blocks, seg_blocks):
            if stop.is_set():
                break
            offset = first * block_size
            if first < 0 or (first + count) * ID_LEN > len(block_map):
                raise ValueError(f"blocks {first}..{first + count - 1} are outside the image")
            want = min(count * block_size, size - offset)
            buf = free.get()
            got = reader.readinto(offset, memoryview(buf)[:want])
            if got != want:
                free.put(buf)
                raise BadInput(f"image ended at {offset + got} while {size} bytes were expected (did it shrink?)")
            stats.bytes_read += got
            stats.blocks_read += count
            work.put((first, count, buf, got))
    except BaseException as e:
        errors.append(e)
        stop.set()
    finally:
        for _ in threads:
            work.put(None)
        for t in threads:
            t.join()
    if errors:
        raise errors[0]
    return stats
