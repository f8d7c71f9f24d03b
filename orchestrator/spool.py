"""Rows that a run collects by the hundred thousand and reads back once, in order — a first backup's catalog rows,
in the backup process and in the catalog process — kept on local disk past the first few thousand, so that a run's
memory does not grow with the number of files it records (a file server of millions of files is backed up by
the same process as one of thousands)."""

from __future__ import annotations

import logging
import marshal
import os
import tempfile
from collections.abc import Iterable, Iterator
from typing import IO, Any

from orchestrator.cachedir import cache_root

log = logging.getLogger(__name__)

PART = 4096  # rows held in memory before they are written out, as one marshalled list


class Spool:
    """An append-only sequence of rows (values ``marshal`` can write: tuples, dicts, lists of str, int, bytes)
    read back in order by iterating. The file has no name (it disappears with the process, however it ends) and
    lives in the local cache directory, not in /tmp (often memory itself). Where no file can be made, rows stay in
    memory, as before spooling existed."""

    def __init__(self, part: int | None = None) -> None:
        self._part = part or PART
        self._rows: list[Any] = []
        self._file: IO[bytes] | None = None
        self._spilled = 0
        self._sizes: list[int] = []  # the byte length of each part written out
        self._end = 0  # where the next part goes in the file
        self._no_file = False

    def append(self, row: Any) -> None:
        self._rows.append(row)
        if len(self._rows) >= self._part:
            self._spill()

    def extend(self, rows: Iterable[Any]) -> None:
        for row in rows:
            self.append(row)

    def __len__(self) -> int:
        return self._spilled + len(self._rows)

    def __iter__(self) -> Iterator[Any]:
        if self._file is not None:
            fd, pos = self._file.fileno(), 0
            for size in list(self._sizes):  # read at offsets: appends may go on meanwhile
                data = os.pread(fd, size, pos)
                if len(data) != size:
                    raise OSError(f"spool file cut short ({len(data)} of {size} bytes at {pos})")
                pos += size
                yield from marshal.loads(data)
        yield from list(self._rows)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        self._rows, self._spilled, self._sizes, self._end = [], 0, [], 0

    def _spill(self) -> None:
        if self._no_file:
            return
        if self._file is None:
            try:
                directory = cache_root()
                os.makedirs(directory, mode=0o700, exist_ok=True)
                self._file = tempfile.TemporaryFile(dir=directory, prefix="spool-")  # noqa: SIM115  # see close
            except OSError as e:
                self._keep_in_memory(e)
                return
        data = marshal.dumps(self._rows)
        try:
            written = 0
            while written < len(data):  # at its offset: a part cut short by a full disk is simply never read
                written += os.pwrite(self._file.fileno(), memoryview(data)[written:], self._end + written)
        except OSError as e:
            self._keep_in_memory(e)
            return
        self._end += len(data)
        self._sizes.append(len(data))
        self._spilled += len(self._rows)
        self._rows = []

    def _keep_in_memory(self, e: OSError) -> None:
        log.info("rows kept in memory from now on: no room for them in %s (%s)", cache_root(), e.strerror or e)
        self._no_file = True
