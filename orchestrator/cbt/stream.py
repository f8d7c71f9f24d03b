"""Byte streams (database dumps, logs, single large files): content-defined chunks, hashed and stored in
parallel while the producer keeps streaming; nothing is staged on local disk."""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

from orchestrator.cbt.chunker import Chunker
from orchestrator.plugin.streams import Readable
from orchestrator.vault.snapshot import STREAM_ENTRY, Item, split_map
from orchestrator.vault.writer import BackupWriter

IN_FLIGHT = 8  # chunks being stored at once: bounds memory to IN_FLIGHT x max chunk size


@dataclass
class StreamCapture:
    item: Item
    bytes_read: int
    chunks: int


def capture_stream(
    writer: BackupWriter,
    stream: Readable,
    item_name: str,
    chunker: Chunker,
    workers: int = 2,
    progress: Callable[[int], None] | None = None,
) -> StreamCapture:
    """Chunk ``stream`` by content and store every chunk; return the snapshot item. The first chunk that cannot
    be stored (a stop request, a closed window, a full vault) stops the reading at once: the rest of a dump is
    not read only to be thrown away."""
    slots = threading.Semaphore(IN_FLIGHT)
    futures: list[tuple[Future[bytes], int]] = []
    total = 0
    failed = threading.Event()

    def store(data: bytes) -> bytes:
        try:
            return writer.store(data)
        except BaseException:
            failed.set()
            raise
        finally:
            slots.release()

    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="stream") as pool:
        for view in chunker.cut_stream(stream):
            if failed.is_set():
                break  # the failure is raised below, by its chunk's result
            slots.acquire()
            n = len(view)
            futures.append((pool.submit(store, bytes(view)), n))
            total += n
            if progress:
                progress(n)
        entries = b"".join(STREAM_ENTRY.pack(f.result(), n) for f, n in futures)
    pieces = [writer.store_meta(p).hex() for p in split_map(entries, STREAM_ENTRY.size)]
    item: Item = {"name": item_name, "type": "stream", "size": total, "map": pieces}
    return StreamCapture(item, total, len(futures))
