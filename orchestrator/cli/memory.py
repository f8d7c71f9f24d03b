"""Keep freed memory for reuse during a one-shot run. A nightly incremental allocates and frees hundreds of
megabytes (listings, index, read buffers); glibc's defaults hand large blocks back to the kernel and fault them
in again (150,000 page faults, a third of the run's system time). Not for the long-running daemon: it would keep
its peak memory."""

from __future__ import annotations

import contextlib
import os

M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_THRESHOLD = -1, -2, -3


def keep_freed_memory() -> None:
    with contextlib.suppress(Exception):  # not glibc, or no ctypes: the defaults stay
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(M_MMAP_THRESHOLD, 128 * 2**20)  # blocks under 128 MiB from the heap, reused when freed
        libc.mallopt(M_TRIM_THRESHOLD, 1024 * 2**20)
        libc.mallopt(M_TOP_PAD, 64 * 2**20)
    # the same for the processes this one starts (a file walker)
    os.environ.update(MALLOC_MMAP_THRESHOLD_=str(128 * 2**20), MALLOC_TRIM_THRESHOLD_=str(1024 * 2**20),
                      MALLOC_TOP_PAD_=str(64 * 2**20))
