"""File reads of a tree capture in reader processes (``orchestrator.cbt.read_worker``), for first backups and other
captures with many files to read: the interpreter lock caps reader threads at about 1.4 busy cores on 2, while the
processes each keep one busy. This module is the backup process's side.

A reader process gets batches of entries, reads the files, cuts and hashes their chunks and asks which of them
are new (``BackupWriter.claim``: deduplication stays exact across readers and with the vault); it compresses and
seals only those, and sends them back in runs of about ``RUN_SIZE``. Every reader's runs go into one pack here
(``BackupWriter.store_sealed``, read from the pipe straight into its buffer), finished, uploaded and indexed by the
writer's uploaders as if made in this process: a reader never touches the vault, and holds a run, not a pack.

Messages both ways: ``kind (1 byte) | length (u32le) | payload``. To the reader: ``I`` the start-up parameters,
``B`` a batch (id, entries), ``N`` the answer to a question (one byte per chunk: 1 store it). From the reader:
``Q`` a question (the chunk ids, concatenated), ``P`` a run of sealed chunks (``PACK`` header, entry table, the
chunks), ``D`` a batch's results (id, one result per entry, as ``FileReader.read`` gives), ``F`` finished (input
closed, last run sent), ``X`` failed (a message). Closing a reader's input asks it to finish.
"""

from __future__ import annotations

import logging
import pickle
import queue
import struct
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import IO, TYPE_CHECKING

from orchestrator.errors import DobaasError
from orchestrator.memory import helper_env

if TYPE_CHECKING:
    from orchestrator.vault.tree import TreeEntry
    from orchestrator.vault.writer import BackupWriter

log = logging.getLogger(__name__)

HEAD = struct.Struct("<cI")
PACK = struct.Struct("<IIQ")  # entry table length, body length, raw bytes
#: sealed chunks a reader holds before it sends them (its buffer: a reader holds no pack of its own)
RUN_SIZE = 2 * 1024 * 1024


def send(out: IO[bytes], kind: bytes, *parts: bytes | memoryview) -> None:
    out.write(HEAD.pack(kind, sum(len(p) for p in parts)))
    for p in parts:
        out.write(p)
    out.flush()


def receive(inp: IO[bytes]) -> tuple[bytes | None, bytes]:
    """The next message's kind and payload; (None, b"") at the end of the input. A ``P`` message's payload is
    its ``PACK`` header only: the caller reads the table and body that follow."""
    head = inp.read(HEAD.size)
    if len(head) < HEAD.size:
        return None, b""
    kind, size = HEAD.unpack(head)
    if kind == b"P":
        return kind, read_exact(inp, PACK.size)
    return kind, read_exact(inp, size)


def read_exact(inp: IO[bytes], size: int, into: memoryview | None = None) -> bytes:
    if into is None:
        data = inp.read(size)
        if len(data) != size:
            raise EOFError("the stream ended inside a message")
        return data
    done = 0
    while done < size:
        n = inp.readinto(into[done:])  # type: ignore[attr-defined]
        if not n:
            raise EOFError("the stream ended inside a message")
        done += n
    return b""


class ReaderProcesses:
    """Reader processes for one capture: ``submit`` batches, then ``close`` (or ``kill`` when the capture
    fails). A reader that dies fails its batches with a clear error, and the capture with it."""

    def __init__(self, writer: BackupWriter, root: str, chunker_cfg: dict, count: int,
                 progress: Callable[[int], None] | None) -> None:
        self.writer, self.progress = writer, progress
        init = pickle.dumps({"key": writer.cipher.master.to_json(), "chunker": chunker_cfg, "root": root,
                             "run_size": RUN_SIZE, "zstd_level": writer.vault.config.zstd_level})
        self.links: list[_Link] = []
        try:
            for n in range(count):
                self.links.append(_Link(self, n, init))
        except BaseException:
            self.kill()
            raise
        self.next_id = 0
        log.info("%s: files read by %d reader processes", root, count)

    def submit(self, entries: list[TreeEntry], future: Future) -> None:
        """Have a batch of regular files read; ``future`` gets their results in order."""
        link = min(self.links, key=lambda lk: lk.files)  # the least loaded
        self.next_id += 1
        link.submit(self.next_id, [(e["p"], e["s"], e["mt"]) for e in entries], future)

    def close(self) -> None:
        """Let each reader finish (its last pack is shipped), wait for them; raise if one failed."""
        for link in self.links:
            link.finish()
        for link in self.links:
            link.join()
        for link in self.links:
            if link.error is not None:
                raise link.error

    def kill(self) -> None:
        for link in self.links:
            link.stop(DobaasError("the capture stopped"))
            link.join()


class _Link:
    """One reader process, the thread here that serves it (answers its questions, takes its packs and its
    results) and the one that writes to it. Messages to the reader go through a queue: the serving thread must
    never wait on a full pipe (the reader, itself waiting to send a pack, would not read it: a deadlock)."""

    def __init__(self, owner: ReaderProcesses, number: int, init: bytes) -> None:
        self.owner, self.number = owner, number
        self.stderr = tempfile.TemporaryFile()  # noqa: SIM115  # read when the reader fails, closed by join
        self.run = bytearray()  # the last run of sealed chunks read (its buffer reused)
        self.proc = subprocess.Popen([sys.executable, "-m", "orchestrator.cbt.read_worker"], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=self.stderr, close_fds=True, env=helper_env())
        self.lock = threading.Lock()
        self.pending: dict[int, tuple[Future, int]] = {}  # batch id -> (its future, its number of files)
        self.files = 0  # files sent and not yet read
        self.error: BaseException | None = None
        self.finished = False
        #: messages for the reader, in order; None closes its input (it finishes)
        self.outbox: queue.SimpleQueue[tuple[bytes, bytes] | None] = queue.SimpleQueue()
        self.outbox.put((b"I", init))
        self.writer_thread = threading.Thread(target=self.pump, name=f"reader-out-{number}", daemon=True)
        self.thread = threading.Thread(target=self.serve, name=f"reader-link-{number}", daemon=True)
        self.writer_thread.start()
        self.thread.start()

    def pump(self) -> None:
        """Write the queued messages to the reader, then close its input."""
        stdin = self.proc.stdin
        assert stdin is not None
        try:
            while (msg := self.outbox.get()) is not None:
                send(stdin, *msg)
            stdin.close()
        except OSError as e:  # the reader is gone: serve() tells why
            log.debug("reader %d: input closed (%s)", self.number, e)

    def submit(self, batch_id: int, entries: list[tuple[str, int, int]], future: Future) -> None:
        with self.lock:
            if self.error is not None:
                future.set_exception(self.error)
                return
            self.pending[batch_id] = (future, len(entries))
            self.files += len(entries)
        self.outbox.put((b"B", pickle.dumps((batch_id, entries), pickle.HIGHEST_PROTOCOL)))

    def serve(self) -> None:
        assert self.proc.stdout is not None
        inp, writer = self.proc.stdout, self.owner.writer
        try:
            while True:
                kind, payload = receive(inp)
                if kind == b"Q":
                    self.outbox.put((b"N", writer.claim(payload)))
                elif kind == b"P":
                    self.take_run(inp, payload)
                elif kind == b"D":
                    self.done(*pickle.loads(payload))
                elif kind == b"F":
                    self.finished = True
                elif kind == b"X":
                    raise DobaasError(f"file reader process {self.number} failed: {payload.decode(errors='replace')}")
                elif kind is None:
                    break
                else:
                    raise DobaasError(f"file reader process {self.number} sent an unknown message {kind!r}")
            rc = self.proc.wait()
            if not self.finished or rc != 0:
                raise DobaasError(f"file reader process {self.number} stopped ({self.how(rc)})")
        except BaseException as e:  # handed to the capture through the batches' futures
            self.stop(e)

    def take_run(self, inp: IO[bytes], head: bytes) -> None:
        """A run of sealed chunks, into the writer's pack of chunks sealed elsewhere. Read here first, then
        copied: a pipe read in the writer's pack, under its lock, would hold up the other reader's runs."""
        table_len, size, raw = PACK.unpack(head)
        table = read_exact(inp, table_len)
        if len(self.run) < size:
            self.run = bytearray(size)
        with memoryview(self.run)[:size] as run:
            read_exact(inp, size, run)
            self.owner.writer.store_sealed(table, run, raw, f"chunks from file reader {self.number}")

    def done(self, batch_id: int, results: list[TreeEntry]) -> None:
        with self.lock:
            future, n = self.pending.pop(batch_id)
            self.files -= n
        progress = self.owner.progress
        if progress is not None:
            for r in results:
                if "e" not in r:
                    progress(r["s"])
        future.set_result(results)

    def how(self, rc: int) -> str:
        self.stderr.seek(0)
        why = self.stderr.read().decode(errors="replace").strip().splitlines()
        how = f"killed by signal {-rc}" if rc < 0 else f"exit code {rc}"
        return how + (f": {why[-1]}" if why else "")

    def stop(self, error: BaseException) -> None:
        """Fail what this reader still had to read, and end it."""
        with self.lock:
            if self.error is None:
                self.error = error
            pending, self.pending = self.pending, {}
        for future, _n in pending.values():
            if not future.done():
                future.set_exception(self.error)
        if self.proc.poll() is None:
            self.proc.kill()

    def finish(self) -> None:
        self.outbox.put(None)

    def join(self) -> None:
        self.thread.join()
        self.proc.wait()
        self.outbox.put(None)  # a pump still waiting (the reader failed): it ends now
        self.writer_thread.join()
        for f in (self.proc.stdin, self.proc.stdout):
            if f is not None:
                try:
                    f.close()
                except OSError:
                    pass
        self.stderr.close()
