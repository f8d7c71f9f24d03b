"""Reading one changed file of a tree into chunks, in a reader thread of the backup process or in a reader process
(``orchestrator.cbt.read_worker``): what is done with each chunk is the caller's ``store``."""

from __future__ import annotations

import io
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from orchestrator.cbt.chunker import Chunker
from orchestrator.plugin.streams import SourceFile, TreeEntry, TreeSource

WHOLE_READ = 16 * 1024 * 1024  # files up to this size are read at once and cut in memory


class FileReader:
    """Reads one changed file into chunks (whole files up to WHOLE_READ cut in memory, larger ones streamed),
    with its alternate data streams, and tells whether it changed while it was read. Thread-safe: one chunker
    per thread."""

    def __init__(self, store: Callable[[bytes], bytes], source: TreeSource, chunker_cfg: dict,
                 progress: Callable[[int], None] | None) -> None:
        self.store, self.source, self.cfg, self.progress = store, source, chunker_cfg, progress
        self.local = threading.local()
        self.min_cut = chunker_cfg["min"]

    def chunker(self) -> Chunker:
        c = getattr(self.local, "chunker", None)
        if c is None:
            c = self.local.chunker = Chunker.from_config(self.cfg)
        return c

    def read(self, entry: TreeEntry) -> TreeEntry:
        """What to add to ``entry``: content ``c`` and size ``s``, or an error ``e``; ``w`` when it changed."""
        try:
            f = self.source.open(entry)
        except OSError as e:
            return {"e": f"cannot be read: {e.strerror or e}"}
        refs, total = [], 0
        store = self.store
        try:
            with f:
                pieces: Iterable[bytes | memoryview]
                if entry["s"] <= WHOLE_READ:
                    data = f.read(entry["s"] + 1)  # the size the walk saw: no 16 MiB buffer to allocate and shrink
                    if len(data) <= entry["s"]:  # cut in memory: no stream buffer to set up per file
                        pieces = [data] if len(data) <= self.min_cut else self.chunker().cut_buf(data)
                    else:  # grew since the walk: fall back to streaming the rest
                        pieces = _stream_rest(data, f, self.chunker())
                else:
                    pieces = self.chunker().cut_stream(f)
                for piece in pieces:
                    refs.append([store(bytes(piece) if isinstance(piece, memoryview) else piece).hex(), len(piece)])
                    total += len(piece)
        except OSError as e:
            return {"e": f"read failed after {total} bytes: {e.strerror or e}"}
        out: TreeEntry = {"c": refs, "s": total}
        if entry.get("xn") and hasattr(self.source, "open_stream"):
            out.update(self.read_streams(entry))
        now = self.source.restat(entry)
        if now is None:
            out["w"] = "; ".join(filter(None, ("deleted while being read", out.get("w"))))
        elif now != (entry["s"], entry["mt"]) or total != entry["s"]:
            out["w"] = "; ".join(filter(None, ("changed while being read", out.get("w"))))
        if self.progress:
            self.progress(total)
        return out

    def read_streams(self, entry: TreeEntry) -> TreeEntry:
        """Alternate data streams the source listed (``xn``) stored like content, as ``xs`` {name: refs}; the
        ``xn`` list is dropped. A stream that cannot be read is a warning: the file itself is saved."""
        streams, warnings = {}, []
        open_stream = self.source.open_stream  # type: ignore[attr-defined]  # optional (shares)
        for name in entry["xn"]:
            refs = []
            try:
                with open_stream(entry, name) as f:
                    for piece in self.chunker().cut_stream(f):
                        refs.append([self.store(bytes(piece)).hex(), len(piece)])
            except OSError as e:
                warnings.append(f"stream {name} not saved: {e.strerror or e}")
                continue
            streams[name] = refs
        entry.pop("xn")
        out: TreeEntry = {"xs": streams} if streams else {}
        if warnings:
            out["w"] = "; ".join(warnings)
        return out


def _stream_rest(head: bytes, f: SourceFile, chunker: Chunker) -> Iterator[memoryview]:
    """Chunk ``head`` followed by the rest of ``f`` as one stream."""

    class Joined(io.RawIOBase):
        def __init__(self) -> None:
            self.head = memoryview(head)

        def readable(self) -> bool:
            return True

        def readinto(self, b: Any) -> int:
            if self.head:
                n = min(len(b), len(self.head))
                b[:n] = self.head[:n]
                self.head = self.head[n:]
                return n
            return f.readinto(b) or 0

    return chunker.cut_stream(Joined())
