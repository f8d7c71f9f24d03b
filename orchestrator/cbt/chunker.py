"""Content-defined chunking for byte streams (dumps, logs, files): boundaries follow content, so an insertion
shifts only the chunks around it and day-to-day dumps deduplicate against each other. FastCDC 2020 via
pyfastcdc (Cython, releases the GIL)."""

from __future__ import annotations

from collections.abc import Iterator

from pyfastcdc import FastCDC

from orchestrator.plugin.streams import Readable


class Chunker:
    def __init__(self, min_size: int, avg_size: int, max_size: int) -> None:
        if not 64 <= min_size <= avg_size <= max_size:
            raise ValueError("chunker sizes must satisfy 64 <= min <= avg <= max")
        # pyfastcdc's effective mean is avg_size + min_size (cut-point skipping); ask for the difference
        self._cdc = FastCDC(max(256, avg_size - min_size), min_size=min_size, max_size=max_size)
        self.min_size, self.avg_size, self.max_size = min_size, avg_size, max_size

    @classmethod
    def from_config(cls, cfg: dict) -> Chunker:
        return cls(cfg["min"], cfg["avg"], cfg["max"])

    def cut_stream(self, stream: Readable) -> Iterator[memoryview]:
        """Yield chunk views; each is valid only until the next one is produced."""
        for c in self._cdc.cut_stream(stream):  # type: ignore[arg-type]  # pyfastcdc only calls readinto
            yield c.data

    def cut_buf(self, buf: bytes | bytearray | memoryview) -> Iterator[memoryview]:
        for c in self._cdc.cut_buf(buf):
            yield c.data
