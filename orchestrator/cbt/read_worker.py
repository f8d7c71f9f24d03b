"""A reader process of a tree capture (started by ``read_procs.ReaderProcesses``, whose docstring describes the
messages): reads the files of each batch it gets, asks which of their chunks are new, and seals those into runs
of about ``RUN_SIZE`` that the backup process puts into its packs. Questions are pipelined: the next batch is
read while the backup process answers."""

from __future__ import annotations

import collections
import gc
import os
import pickle
import sys
from typing import IO

from orchestrator.cbt.file_reader import FileReader
from orchestrator.cbt.read_procs import PACK, receive, send
from orchestrator.plugin.localtree.walk import LocalTree
from orchestrator.vault.crypto import Cipher, MasterKey
from orchestrator.vault.pack import KIND_DATA, PackBuilder

#: chunk data held for one question at most (a question also goes at the end of each batch)
QUESTION_BYTES = 2 * 1024 * 1024
#: questions waiting for their answer at most: reading goes on meanwhile (2 questions of 4 MiB cost a reader of
#: real files about 12 MiB more at its peak, for no measurable speed)
MAX_ASKED = 1


class Reader:
    def __init__(self, inp: IO[bytes], out: IO[bytes], init: dict) -> None:
        self.inp, self.out = inp, out
        self.cipher = Cipher(MasterKey.from_json(init["key"]))
        self.builder = PackBuilder(self.cipher, init["run_size"], init["zstd_level"])
        self.reader = FileReader(self.store, LocalTree(init["root"]), init["chunker"], None)
        self.batches: collections.deque[tuple[int, list[tuple[str, int, int]]]] = collections.deque()
        #: questions sent, oldest first: (chunk ids, their data, the batch results to send once they are stored)
        self.asked: collections.deque[tuple[list[bytes], list, bytes | None]] = collections.deque()
        self.ids: list[bytes] = []
        self.data: list = []
        self.held = 0
        self.eof = False

    def run(self) -> None:
        while self.batches or self.asked or not self.eof:
            if self.batches:
                batch_id, files = self.batches.popleft()
                results = [self.reader.read({"p": p, "s": s, "mt": mt}) for p, s, mt in files]
                self.ask(pickle.dumps((batch_id, results), pickle.HIGHEST_PROTOCOL))
            else:
                self.receive()
        self.ship()
        send(self.out, b"F")

    def receive(self) -> None:
        kind, payload = receive(self.inp)
        if kind == b"B":
            self.batches.append(pickle.loads(payload))
        elif kind == b"N":
            self.stored(payload)
        elif kind is None:
            if self.asked:
                raise EOFError("the backup process closed the input with questions unanswered")
            self.eof = True
        else:
            raise ValueError(f"unknown message {kind!r}")

    def store(self, data: bytes) -> bytes:
        """FileReader's store: the chunk id now; whether to store the data is asked below."""
        cid = self.cipher.chunk_id(data)
        self.ids.append(cid)
        self.data.append(data)
        self.held += len(data)
        if self.held >= QUESTION_BYTES:
            self.ask(None)
        return cid

    def ask(self, results: bytes | None) -> None:
        self.asked.append((self.ids, self.data, results))
        send(self.out, b"Q", b"".join(self.ids))
        self.ids, self.data, self.held = [], [], 0
        while len(self.asked) > MAX_ASKED:
            self.receive()  # batches that arrive meanwhile wait in self.batches

    def stored(self, answer: bytes) -> None:
        ids, data, results = self.asked.popleft()
        if len(answer) != len(ids):
            raise ValueError(f"answer for {len(ids)} chunks has {len(answer)}")
        b = self.builder
        for cid, d, new in zip(ids, data, answer, strict=True):
            if new:
                b.add(cid, d, KIND_DATA)
                if b.full():
                    self.ship()
        if results is not None:
            send(self.out, b"D", results)

    def ship(self) -> None:
        if self.builder.empty():
            return
        body, table, raw = self.builder.body()
        send(self.out, b"P", PACK.pack(len(table), len(body), raw), table, body)
        body.release()
        self.builder.reset()


def main() -> int:
    gc.disable()  # reads make no reference cycles; the collector's passes would cost CPU and free nothing
    inp, out = sys.stdin.buffer, sys.stdout.buffer
    kind, payload = receive(inp)
    if kind != b"I":
        print("no start-up parameters on the input", file=sys.stderr)
        return 2
    try:
        Reader(inp, out, pickle.loads(payload)).run()
    except BrokenPipeError:  # the backup process stopped (aborted): nothing to tell anyone
        os._exit(1)
    except Exception as e:  # told to the backup process, which fails the capture with it
        send(out, b"X", f"{type(e).__name__}: {e}".encode())
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
