"""Keep freed memory for reuse during a one-shot run. A nightly incremental allocates and frees hundreds of
megabytes (listings, index, read buffers); glibc's defaults hand large blocks back to the kernel and fault them
in again (150,000 page faults, a third of the run's system time). Not for the long-running daemon: it would keep
its peak memory."""

from __future__ import annotations

import contextlib
import gc
import os
import threading
from collections.abc import Iterator

M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_THRESHOLD, M_ARENA_MAX = -1, -2, -3, -8


#: the heap grows 16 MiB beyond each need: 64 MiB cost a first backup of 100,000 files 40 MiB of peak RSS for no
#: measurable gain on the nightly incremental (A/B, four runs each)
MMAP_THRESHOLD, TRIM_THRESHOLD, TOP_PAD = 128 * 2**20, 1024 * 2**20, 16 * 2**20
#: one malloc arena: the threads of a run (uploaders, reader links, listing writers) would each get an arena of
#: their own, whose freed blocks the others never reuse (first backup of 100,000 files: peak RSS of the backup
#: process 424-449 -> 379-417 MiB over four runs each, time unchanged). Python's interpreter lock serializes
#: most allocations anyway.
ARENA_MAX = 1
_kept = False


def keep_freed_memory() -> None:
    """From now on in this process (``dobaas run`` calls it first), and in the helpers it starts that ask
    ``helper_env`` (the file walker)."""
    global _kept
    with contextlib.suppress(Exception):  # not glibc, or no ctypes: the defaults stay
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)  # blocks under 128 MiB from the heap, reused when freed
        libc.mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD)
        libc.mallopt(M_TOP_PAD, TOP_PAD)
        libc.mallopt(M_ARENA_MAX, ARENA_MAX)
        _kept = True


def give_back_freed_memory() -> None:
    """Return to the system the free memory this process keeps (``keep_freed_memory``), once: at a point of a
    run after which what was freed will not be needed again."""
    if not _kept:
        return
    with contextlib.suppress(Exception):
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)


def helper_env() -> dict[str, str] | None:
    """The environment for a helper process of ours, with the same setting (glibc reads it at start); None
    when this process keeps the defaults. Not for other programs (dump tools, qemu-img): their memory is
    theirs to manage."""
    if not _kept:
        return None
    return {**os.environ, "MALLOC_MMAP_THRESHOLD_": str(MMAP_THRESHOLD),
            "MALLOC_TRIM_THRESHOLD_": str(TRIM_THRESHOLD), "MALLOC_TOP_PAD_": str(TOP_PAD)}


_paused = 0  # captures running with the collector paused (sources of a policy, policies of the daemon)
_paused_lock = threading.Lock()


@contextlib.contextmanager
def cycle_collection_paused() -> Iterator[None]:
    """No cyclic garbage collection while any caller is inside. A tree capture allocates an object or more per
    file that lives until the listing is written: the collector's passes over them cost about a tenth of a first
    backup's CPU (measured: 100,000 files, 24.2/26.0 s -> 21.3/22.8 s) and free nothing, as the capture makes no
    reference cycles beyond error paths. The collector is process-wide, so captures running side by side count:
    the last one out turns it back on (if it was on when the first came in)."""
    global _paused, _was_enabled
    with _paused_lock:
        if _paused == 0:
            _was_enabled = gc.isenabled()
            gc.disable()
        _paused += 1
    try:
        yield
    finally:
        with _paused_lock:
            _paused -= 1
            if _paused == 0 and _was_enabled:
                gc.enable()


_was_enabled = True
