"""A folder or file of a snapshot as a tar stream for the browser: written by the export's pax writer in a thread
of its own, handed to the response through a bounded queue (memory stays flat, whatever the folder's size), and
stopped when the browser goes away. A file damaged in the vault cuts the transfer (the browser reports a failed
download) instead of handing over an archive with zeros where its bytes were."""

from __future__ import annotations

import logging
import os
import queue
import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING

from orchestrator.export.tar import write_tar
from orchestrator.restore.files import split_selection

if TYPE_CHECKING:
    from orchestrator.vault.repository import Vault
    from orchestrator.vault.snapshot import Snapshot

log = logging.getLogger("dobaas.portal")
_BATCH = 1 << 20  # bytes handed to the response at a time


class DamagedInVault(Exception):
    """A chunk of the download failed authentication: the stream is cut rather than completed with zeros."""


class _Gone(Exception):
    """The browser closed the connection: the writer stops."""


class _QueueWriter:
    def __init__(self, q: queue.Queue, stop: threading.Event) -> None:
        self.q, self.stop, self.buf = q, stop, bytearray()

    def write(self, data: bytes) -> int:
        self.buf += data
        if len(self.buf) >= _BATCH:
            self.flush()
        return len(data)

    def flush(self) -> None:
        while not self.stop.is_set():
            try:
                self.q.put(bytes(self.buf), timeout=0.5)
                self.buf.clear()
                return
            except queue.Full:
                continue
        raise _Gone()


def tar_of(vault: Vault, snap: Snapshot, path: str) -> tuple[str, Iterator[bytes]]:
    """(file name, byte chunks) of the tar archive of ``path`` (as the catalog shows it) in ``snap``."""
    ((item_name, (rel,)),) = split_selection(snap, [path]).items()
    item = next(i for i in snap.items if i["name"] == item_name)
    top = os.path.basename(path.rstrip("/")) or "root"  # the archive's name; members carry the stored name
    q: queue.Queue = queue.Queue(maxsize=8)
    stop = threading.Event()
    done = object()

    def work() -> None:
        out = _QueueWriter(q, stop)
        try:
            st = write_tar(vault.read_chunk, item, lambda cid: vault.read_chunk(cid, "listing"), out,
                           lambda _h, _n: False, top=top, under=rel)
            if st.damaged:  # never a download that looks whole: the archive is left unfinished, the transfer fails
                log.error("download of %s from snapshot %s cut: damaged in the vault: %s", path, snap.id[:12],
                          "; ".join(st.damaged[:20]))
                q.put(DamagedInVault(f"{len(st.damaged)} file(s) under {path} are damaged in the vault"))
                return
            out.flush()
            q.put(done)
        except _Gone:
            pass
        except Exception as e:  # an error ends the stream early: the browser sees a truncated download
            q.put(e)

    def chunks() -> Iterator[bytes]:
        t = threading.Thread(target=work, name="portal-tar", daemon=True)
        t.start()
        try:
            while True:
                got = q.get()
                if got is done:
                    return
                if isinstance(got, Exception):
                    raise got
                yield got
        finally:
            stop.set()

    return f"{top}.tar", chunks()
