"""The write side of one backup: deduplicate, compress, encrypt, pack and upload chunks; publish a snapshot last.

``store`` is thread-safe and cheap to call from many worker threads: a thread takes a partly filled pack buffer
from a shared pool for each chunk (so there are never more partly filled buffers than threads storing at the same
moment, however many threads a run starts and ends), and full packs go to a small pool of uploader threads
(bounded, so memory stays flat). Nothing becomes visible until ``commit`` has stored every pack, written the index
for them and finally written the snapshot manifest.
"""

from __future__ import annotations

import logging
import threading
import time
import weakref
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

from orchestrator.errors import DobaasError, VaultBusy
from orchestrator.vault.backend import AlreadyExists
from orchestrator.vault.crypto import ID_LEN
from orchestrator.vault.index import Index, encode_index_raw
from orchestrator.vault.locks import LOCK_TTL, VaultLock
from orchestrator.vault.pack import KIND_DATA, KIND_META, PackBuilder, PackEntry, encode_entries, pack_path
from orchestrator.vault.repository import Vault
from orchestrator.vault.snapshot import Snapshot

log = logging.getLogger(__name__)


@dataclass
class WriteStats:
    chunks_new: int = 0
    chunks_reused: int = 0
    raw_bytes_new: int = 0  # plaintext bytes of new chunks
    bytes_written: int = 0  # bytes of every object this backup added to the vault
    packs_written: int = 0


class BackupWriter:
    def __init__(self, vault: Vault, lock: VaultLock, uploaders: int = 2,
                 abort_check: Callable[[], None] | None = None,
                 load_index: Callable[[], Index] | None = None) -> None:
        self.vault = vault
        #: raises when the backup must stop (daemon stopping, window closed): checked at every chunk
        self.abort_check = abort_check
        self.cipher = vault.cipher
        self.lock = lock
        #: the vault's index, loaded when first needed (``index``): a tree capture has its walk started by then
        self._load_index = load_index or vault.load_index
        self._index: Index | None = None
        self._index_mutex = threading.Lock()
        self.stats = WriteStats()
        self._mutex = threading.Lock()
        self._claimed: set[bytes] = set()  # new chunks of this backup until their pack is in the index
        #: partly filled builders of each kind, none in use: taken for a chunk (``store``) and put back (``_put``)
        self._open: dict[int, list[PackBuilder]] = {KIND_DATA: [], KIND_META: []}
        self._last = threading.local()  # by kind: the builder each thread took last (a hint, never an owner)
        self._sealed: PackBuilder | None = None  # the data pack that chunks sealed elsewhere go into
        self._sealed_lock = threading.Lock()
        self._pool = ThreadPoolExecutor(max_workers=uploaders, thread_name_prefix="upload")
        self._inflight = threading.Semaphore(uploaders + 1)
        self._futures: list[Future] = []
        self._new_packs: dict[str, bytes] = {}  # pack -> its encoded entry table, for this backup's index object
        self._error: BaseException | None = None
        self._closed = False

    @property
    def index(self) -> Index:
        idx = self._index
        if idx is None:
            with self._index_mutex:
                if self._index is None:
                    try:
                        self._index = self._load_index()
                    except OSError as e:  # not to be taken for a failed read of the file being stored
                        raise DobaasError(f"the vault's index cannot be read: {e.strerror or e}") from e
                idx = self._index
        return idx

    # ---- storing chunks ----------------------------------------------------------------------------------
    def store(self, data: bytes | memoryview, kind: int = KIND_DATA) -> bytes:
        """Return the chunk id of ``data``, storing it unless the vault (or this backup) already has it."""
        if self.abort_check is not None:
            self.abort_check()  # a stop request or a closed window: stop at this chunk boundary
        cid = self.cipher.chunk_id(data)
        if self._error is not None:
            raise self._error
        mine: dict[int, weakref.ref[PackBuilder]] | None = getattr(self._last, "by_kind", None)
        if mine is None:
            mine = self._last.by_kind = {}
        # the builder this thread used last: a file's (or a segment's) chunks stay together in a pack whenever no
        # other thread took it meanwhile (a weak reference: a shipped pack's buffer is freed once stored)
        with self._mutex:
            if not self._claim_one(cid):
                return cid
            open_ = self._open[kind]
            last = mine.get(kind)
            builder = last() if last is not None else None
            if builder is not None and builder in open_:
                open_.remove(builder)
            else:
                builder = open_.pop() if open_ else None
        if builder is None:
            builder = self._new_builder()
        mine[kind] = weakref.ref(builder)
        try:
            builder.add(cid, data, kind)
        except BaseException:
            self._put(kind, builder)  # what it held before this chunk is still to be stored
            raise
        if builder.full():
            self._ship(builder)
        else:
            self._put(kind, builder)
        return cid

    def claim(self, ids: bytes) -> bytes:
        """For chunk ids (concatenated) computed elsewhere (a reader process): one byte per id, 1 for each that
        the caller must store (now claimed for it), 0 for those the vault or this backup already has."""
        if self.abort_check is not None:
            self.abort_check()
        if self._error is not None:
            raise self._error
        self.index  # noqa: B018  # loaded before the mutex is taken
        with self._mutex:
            return bytes(self._claim_one(ids[k : k + ID_LEN]) for k in range(0, len(ids), ID_LEN))

    def _claim_one(self, cid: bytes) -> bool:
        """With the mutex held: whether ``cid`` is new (it is then claimed by the caller, who stores it), else a
        reuse is counted."""
        if cid in self.index.chunks or cid in self._claimed:
            self.stats.chunks_reused += 1
            return False
        self._claimed.add(cid)
        return True

    def store_sealed(self, table: bytes, sealed: bytes | memoryview, raw_bytes: int, what: str) -> None:
        """Chunks compressed and sealed elsewhere (a reader process), their ids claimed here (``claim``): appended
        as they are to the one data pack that every other process's chunks go into, shipped when full. One pack
        fills at a time: the reader processes cost one partly filled buffer here, and none of their own beyond a
        run of chunks."""
        with self._sealed_lock:
            b = self._sealed
            if b is None:
                b = self._sealed = self._new_builder()
            b.append_sealed(table, sealed, raw_bytes, what)
            if b.full():
                self._sealed = None
                self._ship(b)

    def has(self, cid: bytes) -> bool:
        """Whether the vault or this backup already holds the chunk ``cid``."""
        with self._mutex:
            return cid in self.index.chunks or cid in self._claimed

    def store_meta(self, data: bytes) -> bytes:
        return self.store(data, KIND_META)

    def _put(self, kind: int, b: PackBuilder) -> None:
        with self._mutex:
            self._open[kind].append(b)

    def _new_builder(self) -> PackBuilder:
        """A builder for each pack, dropped once stored: its buffer's pages go back to the system then (keeping
        emptied builders for reuse held 18 MiB each for no measurable gain: ``PackBuilder``)."""
        cfg = self.vault.config
        return PackBuilder(self.cipher, cfg.pack_size, cfg.zstd_level)

    def _ship(self, b: PackBuilder) -> None:
        self._inflight.acquire()  # back-pressure: at most uploaders+1 packs waiting or uploading
        self._submit(b)

    def _submit(self, b: PackBuilder) -> None:
        """Seal the header and hand the pack to the uploaders (room among them taken by the caller)."""
        try:
            name, view, entries = b.finish()
            self._futures.append(self._pool.submit(self._upload, b, name, view, entries))
        except BaseException:
            self._inflight.release()
            raise

    def _upload(self, b: PackBuilder, name: str, view: memoryview, entries: list[PackEntry]) -> None:
        try:
            for attempt in (1, 2, 3):
                try:
                    self.vault.backend.put(pack_path(name), view)
                    break
                except AlreadyExists:
                    # an interrupted upload left a partial object under this content name (append-only storage
                    # cannot remove it): seal the header again, with a fresh nonce, and the pack gets a new name
                    if attempt == 3:
                        raise DobaasError(f"pack {name[:12]} could not be stored: its upload keeps failing") from None
                    log.warning("pack %s already exists (partial upload?): storing it under a new name", name[:12])
                    view.release()
                    name, view, entries = b.finish()
            size = len(view)
            table = encode_entries(entries)
            with self._mutex:
                self.index.add_pack_raw(name, table)
                self._new_packs[name] = table
                self._claimed.difference_update(e.id for e in entries)  # in the index now: held once, not twice
                self.stats.packs_written += 1
                self.stats.bytes_written += size
                self.stats.chunks_new += len(entries)
                log.debug("pack stored: %d chunk(s), %d bytes", len(entries), size)
                self.stats.raw_bytes_new += b.raw_bytes
        except BaseException as e:
            if self._error is None:
                self._error = e
            raise
        finally:
            view.release()
            self._inflight.release()

    def flush(self) -> None:
        """Ship every partly filled pack and wait for all uploads; raise the first upload error."""
        with self._sealed_lock:
            sealed, self._sealed = self._sealed, None
        if sealed is not None:
            self._put(KIND_DATA, sealed)  # shipped with the others below
        for kind in (KIND_DATA, KIND_META):
            while True:
                with self._mutex:
                    if not self._open[kind]:
                        break
                    b = self._open[kind].pop()
                if not b.empty():
                    self._ship(b)
        for f in self._futures:
            f.exception()
        self._futures = [f for f in self._futures if not f.done()]
        if self._error is not None:
            raise self._error

    # ---- publishing ---------------------------------------------------------------------------------------
    def _write_index(self) -> None:
        if not self._new_packs:
            return
        name, sealed = self.vault.put_sealed("index", lambda: encode_index_raw(self.cipher, self._new_packs))
        self.index.objects.add(name)
        self.stats.bytes_written += len(sealed)
        self._new_packs = {}

    def commit(self, snap: Snapshot) -> str:
        """Make the snapshot visible: packs, then index, then (last) the manifest."""
        self.flush()
        self._write_index()
        if time.time() - self.lock.last_refresh > LOCK_TTL * 0.9:
            raise VaultBusy("backup lost its vault lock (process paused too long?); snapshot not written, run again")
        self.stats.bytes_written += self.vault.write_snapshot(snap)
        log.debug("snapshot %s of %s published", snap.id[:12], snap.name)
        self.close()
        return snap.id

    def abort(self) -> None:
        """Stop after a failure: finish uploads in flight and index them so the next run reuses them."""
        if self._closed:
            return
        for f in self._futures:
            f.exception()
        if self._new_packs:
            try:
                self._write_index()
            except (DobaasError, OSError) as e:
                log.info("could not index packs of the failed backup (the next run adopts them): %s", e)
        self.close()

    def close(self) -> None:
        self._closed = True
        self._pool.shutdown(wait=True)
