"""File trees: capture a walked tree, reading only files whose metadata changed (restoring one is
``orchestrator.restore.tree``).

Capture keeps walk order: file reads run on reader threads (and, once many files are to be read, in reader
processes: ``orchestrator.cbt.read_procs``) while the walk continues, and entries are written to the tree listing
in order as their reads complete (bounded, so memory stays flat on huge trees).
"""

from __future__ import annotations

import collections
import json
import logging
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

from orchestrator.catalog.rows import catalog_part
from orchestrator.cbt.file_reader import FileReader
from orchestrator.cbt.listing import Listing
from orchestrator.cbt.listing_cache import ListingCache
from orchestrator.cbt.read_procs import ReaderProcesses
from orchestrator.errors import IntegrityError
from orchestrator.memory import cycle_collection_paused, give_back_freed_memory
from orchestrator.plugin.streams import TreeSource, WalkItem
from orchestrator.spool import Spool
from orchestrator.vault.snapshot import Item
from orchestrator.vault.tree import TreeEntry, TreeWriter, encode_entry, iter_tree_pieces, printable
from orchestrator.vault.writer import BackupWriter

log = logging.getLogger(__name__)

MAX_PENDING = 8192  # entries waiting for their file read, at most (more than DEFER_READS + READ_BATCH_FILES)
#: files handed to a reader thread at once: one task, one future and one thread hand-over per batch, not per file
#: (with the collector paused and reads sized by the walk: first backup of 100,000 files 24.7 -> 16.7 s, medians
#: of three interleaved runs; docs/benchmarks.md)
READ_BATCH_FILES = 64
READ_BATCH_BYTES = 4 * 1024 * 1024
#: a capture that has handed this many files (or bytes) to its reader threads goes on with reader processes
#: (``orchestrator.cbt.read_procs``), when the source's files can be opened by path; below that, starting them
#: would cost more than it saves
PROCESSES_AFTER_FILES = 2000
PROCESSES_AFTER_BYTES = 256 * 1024 * 1024
LISTING_PIECES_IN_FLIGHT = 16  # listing pieces waiting to be stored, at most (each up to 256 KiB)
#: reads held back until the walk ends (or this many wait) in incrementals: readers running during the walk would
#: take the GIL from it at every lstat, so a nightly incremental (few changed files) walks first, then reads
DEFER_READS = 4096


@dataclass
class TreeStats:
    entries: int = 0
    files: int = 0
    files_read: int = 0
    files_unchanged: int = 0
    bytes_read: int = 0
    bytes_total: int = 0
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


@dataclass
class TreeCapture:
    item: Item
    stats: TreeStats
    #: entries that are new or differ from the parent snapshot's (all entries when there is no parent), reduced to
    #: what the catalog records of them (``catalog_part``): a first backup of a file server has every entry here,
    #: so they go to local disk past the first few thousand
    changed: Spool = field(default_factory=Spool)
    #: paths the parent had and this capture does not
    deleted: list[str] = field(default_factory=list)
    #: whether ``changed``/``deleted`` are relative to a parent item (else ``changed`` is everything)
    relative_to_parent: bool = False
    #: the new listing, for the local cache once the snapshot is committed (``ListingCache.store_later``)
    listing: Listing | None = None


def _reusable(e: TreeEntry) -> bool:
    """May the parent's entry be reused as is? Not when it carries an error or a changed-while-read mark, nor
    a file without content."""
    return "e" not in e and "w" not in e and (e["t"] != "f" or "c" in e)


def _signature(sigfn: Callable[[TreeEntry], object] | None) -> Callable[[TreeEntry], object]:
    """The source's signature of an entry that may be reused as is, else None."""
    return lambda e: sigfn(e) if sigfn and _reusable(e) else None


def _parent_listing(parent_item: Item | None, read_meta: Callable[[bytes], bytes], source: TreeSource,
                    cache: ListingCache | None, slot: str) -> Listing | None:
    """The parent's listing in walk order, from the local cache when it has it, else from the vault."""
    if parent_item is None or parent_item.get("type") != "tree":
        return None
    listing = cache.load(parent_item, slot) if cache else None
    log.info("%s: previous listing from %s", parent_item.get("root", parent_item["name"]),
             "the local cache" if listing is not None else "the vault")
    if listing is None:
        listing = Listing.from_pieces(iter_tree_pieces(parent_item, read_meta),
                                      _signature(getattr(source, "signature", None)))
    return listing


def _uses_damaged(prev: Listing, quarantined: Mapping[bytes, str]) -> set[int]:
    """Positions of the parent entries whose content (or alternate streams) uses a quarantined chunk; their
    signatures are cleared, so every walker reports them for a new read."""
    needles = [cid.hex().encode() for cid in quarantined]
    heal = {k for k, line in enumerate(prev.lines) if any(n in line for n in needles)}
    for k in heal:
        prev.sigs[k] = None
    return heal


def _in_process_items(source: TreeSource, prev: Listing) -> Iterator[WalkItem]:
    """``source.walk`` in this process, its entries turned into walk items (a run per unchanged entry)."""
    pos = {p: k for k, p in enumerate(prev.paths)}
    signatures = {p: sig for p, sig in zip(prev.paths, prev.sigs, strict=True) if sig is not None}
    for e in source.walk(signatures.get if signatures else None):
        if isinstance(e, str):
            k = pos[e]
            yield (k, k + 1)
        else:
            yield (pos.get(e["p"], -1), e)


def _unused(prev: Listing, used: bytearray) -> list[str]:
    """Paths of the parent's entries that no walk item claimed: deleted since."""
    out, k = [], used.find(0)
    while k >= 0:
        out.append(prev.paths[k])
        k = used.find(0, k + 1)
    return out


def _same_file(old: TreeEntry, new: TreeEntry) -> bool:
    """The parent's entry describes this file exactly (same metadata; the parent also has content ``c``, and
    no ``w``/``e`` mark, which would force a new read)."""
    return len(old) == len(new) + 1 and "c" in old and old.items() >= new.items()


def capture_tree(
    writer: BackupWriter,
    source: TreeSource,
    item_name: str,
    chunker_cfg: dict,
    parent_item: Item | None = None,
    workers: int = 2,
    progress: Callable[[int], None] | None = None,
    cache: ListingCache | None = None,
    cache_slot: str = "",
) -> TreeCapture:
    """Capture a tree. Unchanged entries (same type, mode, owner, size, mtime, ctime, inode, links) keep their
    content references and their serialized listing line without being read or even parsed; only new or
    changed files are read. With a ``cache``, the parent listing comes in compact form from local disk; the
    caller stores the new one (``TreeCapture.listing``) once its snapshot is committed."""
    warnings: list[str] = []
    try:
        prev = _parent_listing(parent_item, lambda cid: writer.vault.read_chunk(cid, f"item {item_name} listing"),
                               source, cache, cache_slot)
    except IntegrityError as e:  # the previous listing is damaged: read everything (and so store it afresh)
        warnings.append(f"{item_name}: the previous snapshot's listing is unreadable ({e}); every file is read")
        log.warning("%s", warnings[-1])
        prev = None
    quarantined = writer.index.quarantined  # chunks known damaged: whatever uses them is read again
    heal = _uses_damaged(prev, quarantined) if prev is not None and quarantined else set()
    if heal:
        warnings.append(f"{item_name}: {len(heal)} unchanged entr{'y' if len(heal) == 1 else 'ies'} used data "
                        "recorded as damaged in the vault: read again to repair it")
        log.warning("%s", warnings[-1])
    run = _TreeRun(writer, source, prev, FileReader(writer.store, source, chunker_cfg, progress), heal)
    run.stats.warnings.extend(warnings)
    walk_delta = getattr(source, "walk_delta", None)  # the source may walk in a process of its own
    delta = walk_delta(run.prev.paths, run.prev.sigs) if walk_delta is not None else None
    items: Iterable[WalkItem] = delta if delta is not None else _in_process_items(source, run.prev)
    if delta is not None:
        writer.index  # noqa: B018  # loaded now, while the walk runs elsewhere, not at the first changed file
    # only in-process incremental walks hold reads back: a first backup is mostly reads, and must make progress
    # from its first seconds (a backup window may end it; the next run reuses what it stored)
    run.deferring = run.cap.relative_to_parent and delta is None
    workers = min(workers, getattr(source, "max_workers", workers))  # 0: read in this thread
    with cycle_collection_paused():
        try:
            run.walk(items, workers)
        finally:
            close = getattr(items, "close", None)
            if close is not None:
                close()  # a walk in another process stops with the capture, whatever ended it
        return run.finish(item_name)


class _TreeRun:
    """One capture of a tree: the walk items in, the new listing out, in walk order. A file being read has a
    placeholder in the listing until its read completes; the listing is cut into pieces at the end, so
    unchanged entries never wait behind a read in flight."""

    def __init__(self, writer: BackupWriter, source: TreeSource, prev: Listing | None, reader: FileReader,
                 heal: set[int] | None = None) -> None:
        self.writer, self.source, self.reader = writer, source, reader
        self.heal = heal or set()  # parent entries that use damaged data: never reused, read again
        self.stats = TreeStats()
        self.cap = TreeCapture({}, self.stats, relative_to_parent=prev is not None)
        self.prev = prev or Listing()
        self.signature = _signature(getattr(source, "signature", None))
        self.new = Listing()
        #: (placeholder in the new listing, entry, its batch, its place in the batch), in walk order
        self.reads: collections.deque[tuple[int, TreeEntry, Future[list[TreeEntry]], int]] = collections.deque()
        self.batch: _ReadBatch | None = None  # files to read, not yet handed to a reader
        self.deferring = False  # reads held back until the walk ends (or DEFER_READS wait)
        self.deferred: list[_ReadBatch] = []
        self.deferred_files = 0
        #: (position in the new listing, parent start, parent end) of runs of unchanged entries
        self.spans: list[tuple[int, int, int]] = []
        self.used = bytearray(len(self.prev))  # parent entries claimed by the walk; the others were deleted
        self.seen_inodes: dict[tuple[int, int], str] = {}
        #: where reader processes may open the source's files (None: threads only)
        self.reader_root: str | None = getattr(source, "reader_root", None)
        self.procs: ReaderProcesses | None = None
        self.workers = 0
        self.handed = [0, 0]  # files, bytes handed to reader threads so far

    def walk(self, items: Iterable[WalkItem], workers: int) -> None:
        self.workers = workers
        try:
            with ThreadPoolExecutor(max_workers=max(workers, 1), thread_name_prefix="tree-read") as pool:
                self.walk_items(items, pool, workers)
            if self.procs is not None:
                self.procs.close()
        finally:
            if self.procs is not None:
                self.procs.kill()  # after close: nothing left to stop

    def walk_items(self, items: Iterable[WalkItem], pool: ThreadPoolExecutor, workers: int) -> None:
        abort_check = self.writer.abort_check
        next_check = 0
        new = self.new
        for k, entry in items:
            if abort_check is not None and len(new) >= next_check:
                abort_check()  # a closed window stops a long walk of unchanged entries too, not only reads
                next_check = len(new) + 4096
            if isinstance(entry, int):
                self.unchanged(k, entry)
            else:
                self.changed(k, entry, pool, workers)
        self.ship_batch(pool)
        self.start_deferred(pool)
        while self.reads:
            self.finish_read(*self.reads.popleft())

    def unchanged(self, k: int, end: int) -> None:
        """Parent entries k..end-1 are unchanged: reuse their entries, contents and lines."""
        prev, spans = self.prev, self.spans
        last = spans[-1] if spans else None
        if last is not None and last[2] == k and last[0] + last[2] - last[1] == len(self.new):
            spans[-1] = (last[0], last[1], end)  # continues the previous span
        else:
            spans.append((len(self.new), k, end))
        self.new.extend(prev, k, end)
        self.used[k:end] = b"\x01" * (end - k)
        nfiles, nbytes = prev.files_and_bytes(k, end)
        self.stats.files += nfiles
        self.stats.files_unchanged += nfiles
        self.stats.bytes_total += nbytes
        for m in prev.links_in(k, end):  # later names of these inodes are hard links to them
            self.seen_inodes.setdefault(prev.links[m], prev.paths[m])

    def changed(self, k: int, entry: TreeEntry, pool: ThreadPoolExecutor, workers: int) -> None:
        """A new or changed entry (k: its index in the parent listing, -1 if new): reuse what can be reused,
        read the rest."""
        slot: tuple[Future[list[TreeEntry]], int] | None = None
        line: bytes | None = None
        old_line = self.prev.lines[k] if k >= 0 else None
        if k >= 0:
            self.used[k] = 1
        old = json.loads(old_line) if old_line is not None and k not in self.heal else None
        if entry["t"] == "f" and "e" not in entry:
            entry, line, slot = self.changed_file(entry, old, old_line, pool, workers)
        elif old is not None and old == entry:
            line = old_line
        if slot is not None:
            self.reads.append((self.new.placeholder(), entry, *slot))
            reads = self.reads
            while reads and (len(reads) > MAX_PENDING or reads[0][2].done()):
                self.finish_read(*reads.popleft())  # bounded: the walk waits when reads fall behind
            return
        if "e" in entry:
            self.stats.errors.append(f"{self.where(entry)}: {entry['e']}")
        if line is None:
            self.cap.changed.append(catalog_part(entry))
            line = encode_entry(entry)
        self.new.append(entry, line, self.signature(entry))

    def changed_file(self, entry: TreeEntry, old: TreeEntry | None, old_line: bytes | None, pool: ThreadPoolExecutor,
                     workers: int) -> tuple[TreeEntry, bytes | None, tuple[Future[list[TreeEntry]], int] | None]:
        """A regular file: a later name of an inode already seen becomes a hard link; a file the parent has
        exactly is reused; anything else is read (now, or in a batch). Returns (entry, its line if reused, the
        batch that reads it and its place there)."""
        self.stats.files += 1
        key = (entry.get("dv", 0), entry.get("i", 0))
        if entry.get("n", 1) > 1 and key in self.seen_inodes:
            link: TreeEntry = {**entry, "t": "h", "l": self.seen_inodes[key]}
            return link, old_line if old == link else None, None
        if entry.get("n", 1) > 1:
            self.seen_inodes[key] = entry["p"]
        if old is not None and _same_file(old, entry):
            self.stats.files_unchanged += 1
            self.stats.bytes_total += old.get("s", 0)
            return old, old_line, None
        if not workers:
            done: Future[list[TreeEntry]] = Future()
            done.set_result([self.reader.read(entry)])
            return entry, None, (done, 0)
        b = self.batch
        if b is None:
            b = self.batch = _ReadBatch()
        b.entries.append(entry)
        b.bytes += entry.get("s", 0)
        if len(b.entries) >= READ_BATCH_FILES or b.bytes >= READ_BATCH_BYTES:
            self.ship_batch(pool)
        return entry, None, (b.future, len(b.entries) - 1)

    def ship_batch(self, pool: ThreadPoolExecutor) -> None:
        """Hand the batch being filled to a reader (or hold it back while deferring)."""
        b, self.batch = self.batch, None
        if b is None:
            return
        if not self.deferring:
            self.submit(b, pool)
            return
        self.deferred.append(b)
        self.deferred_files += len(b.entries)
        if self.deferred_files >= DEFER_READS:
            self.start_deferred(pool)
            self.deferring = False  # from now on, reads run as they come

    def start_deferred(self, pool: ThreadPoolExecutor) -> None:
        for b in self.deferred:
            self.submit(b, pool)
        self.deferred.clear()

    def submit(self, b: _ReadBatch, pool: ThreadPoolExecutor) -> None:
        """To the reader processes once enough reads were handed out (started then), else to a thread."""
        procs = self.procs
        if procs is None and self.reader_root is not None and (
                self.handed[0] >= PROCESSES_AFTER_FILES or self.handed[1] >= PROCESSES_AFTER_BYTES):
            try:
                procs = self.procs = ReaderProcesses(self.writer, self.reader_root, self.reader.cfg, self.workers,
                                                     self.reader.progress)
                give_back_freed_memory()
            except OSError as e:  # reads go on in threads
                log.warning("%s: no reader processes (%s): files are read in this process", self.source.root, e)
                self.reader_root = None
        if procs is not None:
            procs.submit(b.entries, b.future)
            return
        self.handed[0] += len(b.entries)
        self.handed[1] += b.bytes
        pool.submit(self.read_batch, b)

    def read_batch(self, b: _ReadBatch) -> None:
        """In a reader thread: read every file of the batch, then settle its future."""
        try:
            b.future.set_result([self.reader.read(e) for e in b.entries])
        except BaseException as e:
            b.future.set_exception(e)

    def where(self, entry: TreeEntry) -> str:
        return printable(f"{self.source.root}/{entry['p']}")

    def finish_read(self, idx: int, entry: TreeEntry, batch: Future[list[TreeEntry]], pos: int) -> None:
        result = batch.result()[pos]
        entry.update(result)
        stats = self.stats
        if "e" in result:
            stats.errors.append(f"{self.where(entry)}: {result['e']}")
        else:
            stats.files_read += 1
            stats.bytes_read += result["s"]
        if "w" in result:
            stats.warnings.append(f"{self.where(entry)}: {result['w']}")
        stats.bytes_total += entry.get("s", 0)
        self.cap.changed.append(catalog_part(entry))
        self.new.fill(idx, entry, encode_entry(entry), self.signature(entry))

    def finish(self, item_name: str) -> TreeCapture:
        """Cut the listing into pieces (reusing the parent's where whole runs are unchanged): the item."""
        new, cap = self.new, self.cap
        new.seal()
        self.stats.entries = len(new)
        damaged = {cid.hex() for cid in self.writer.index.quarantined}
        # pieces are compressed, sealed and stored by two threads while this one cuts the next (zstd releases the
        # interpreter lock): the listing of a first backup of 100,000 files is 25 MB to store
        room = threading.Semaphore(LISTING_PIECES_IN_FLIGHT)
        with ThreadPoolExecutor(max_workers=2, thread_name_prefix="listing") as pool:
            def store_later(data: bytes) -> Future[bytes]:
                room.acquire()
                f = pool.submit(self.writer.store_meta, data)
                f.add_done_callback(lambda _f: room.release())
                return f

            tree = TreeWriter(store_later)
            _write_listing(tree, new, self.prev, self.spans, damaged)
            pieces = tree.finish()
        cap.deleted = _unused(self.prev, self.used)
        cap.item = {"name": item_name, "type": "tree", "root": self.source.root, "entries": self.stats.entries,
                    "size": self.stats.bytes_total, "map": pieces, "errors": len(self.stats.errors)}
        new.pieces, new.piece_ends = tree.pieces, tree.ends
        cap.listing = new
        return cap


@dataclass
class _ReadBatch:
    """Files read one after the other by one reader thread; ``future`` gives their results in order."""

    entries: list[TreeEntry] = field(default_factory=list)
    bytes: int = 0
    future: Future[list[TreeEntry]] = field(default_factory=Future)


def _write_listing(tree: TreeWriter, new: Listing, prev: Listing, spans: list[tuple[int, int, int]],
                   damaged: set[str] = frozenset()) -> None:  # type: ignore[assignment]
    """Write the new listing: parent pieces that lie wholly within a run of unchanged entries are reused as they
    are (unless recorded damaged), every other entry goes line by line (and is cut into pieces by the usual
    rule)."""
    i = 0  # the next entry to write
    for ns, ps, pe in spans:
        for start, end, hexid in prev.whole_pieces(ps, pe):
            if hexid in damaged:
                continue  # its lines are written afresh below, which stores the piece again
            tree.add_lines(new.paths, new.lines, i, ns + start - ps)
            tree.add_piece(hexid, end - start)
            i = ns + end - ps
    tree.add_lines(new.paths, new.lines, i, len(new))
