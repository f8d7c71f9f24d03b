"""The local walk in a process of its own, so the 100,000 lstat calls of a nightly incremental run on the second
core while the backup process opens the vault, reads the changed files and writes the listing.

Input (stdin, one marshal blob): root, exclude patterns, one_file_system, and the parent listing as two lists in
walk order: paths and stat signatures (None: must not be reused). Output (stdout): length-prefixed marshal frames,
each a list of items in walk order (see ``orchestrator.plugin.streams.WalkItem``):
``(i, j, files, bytes)`` parent entries i..j-1 unchanged, ``k`` one unchanged parent entry that is a file with
several links, ``(k, entry)`` a new or changed entry (k: its parent index, -1 if new). A final frame
``("end",)`` or ``("oserror", errno, text)`` closes the stream.

Only the standard library and the walker are imported here: the process starts in a few tens of milliseconds.
"""

from __future__ import annotations

import errno
import logging
import marshal
import os
import struct
import subprocess
import sys
import time
from collections.abc import Iterator

from plugins.files.walker import LocalTree

log = logging.getLogger(__name__)

FRAME = struct.Struct("<I")
FRAME_ITEMS = 256
#: a frame holding a changed entry leaves after this long at most, so its read starts while the walk goes on
FRAME_DELAY = 0.02


def _write(fd: int, obj: object) -> None:
    data = marshal.dumps(obj)
    view = memoryview(FRAME.pack(len(data)) + data)
    while view:
        view = view[os.write(fd, view) :]


def walk_items(tree: LocalTree, paths: list[str], sigs: list[tuple | None]) -> Iterator:
    """Items in walk order: runs of unchanged parent entries, and new or changed entries."""
    index = {p: k for k, p in enumerate(paths)}

    def previous(path: str) -> tuple | None:
        k = index.get(path)
        return None if k is None else sigs[k]

    start = end = -1  # the run being built: parent entries start..end-1
    files = nbytes = 0
    for e in tree.walk(previous if paths else None):
        if type(e) is str:
            k = index[e]
            sig = sigs[k]
            if k != end or (sig[0] == "f" and sig[8] > 1):  # type: ignore[index]
                if start >= 0:
                    yield (start, end, files, nbytes)
                start = end = -1
                if sig[0] == "f" and sig[8] > 1:  # type: ignore[index]  # the core keeps hard-link bookkeeping
                    yield k
                    continue
                start, files, nbytes = k, 0, 0
            end = k + 1
            if sig[0] == "f":  # type: ignore[index]
                files += 1
                nbytes += sig[6]  # type: ignore[index]
            continue
        if start >= 0:
            yield (start, end, files, nbytes)
        start = end = -1
        yield (index.get(e["p"], -1), e)
    if start >= 0:
        yield (start, end, files, nbytes)


def spawn_walk(tree: LocalTree, paths: list[str], sigs: list[tuple | None]) -> Iterator | None:
    """Start ``walk_items`` for ``tree`` in a child process; its items as they come, or None when no child can
    be started here (the caller walks in its own process then)."""
    try:
        proc = subprocess.Popen([sys.executable, "-m", "plugins.files.walk_process"], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, close_fds=True)
    except OSError as e:
        log.info("walk of %s in this process: no walker process (%s: %s)", tree.path, sys.executable, e.strerror)
        return None
    return _items(proc, tree, marshal.dumps((tree.path, tree.exclude, tree.one_file_system, paths, sigs)))


def _items(proc: subprocess.Popen, tree: LocalTree, request: bytes) -> Iterator:
    """The child's items; the child is killed when the consumer stops early (an aborted run), and any failure
    of it is an OSError naming the tree."""
    try:
        assert proc.stdin and proc.stdout and proc.stderr
        try:
            proc.stdin.write(request)
            proc.stdin.close()
        except BrokenPipeError:
            pass  # the child died at once: its stderr says why (below)
        read = proc.stdout.read
        while True:
            head = read(4)
            if len(head) < 4:
                break
            frame = marshal.loads(read(FRAME.unpack(head)[0]))
            if type(frame) is tuple:
                if frame[0] == "oserror":
                    raise OSError(frame[1], frame[2])
                return
            yield from frame
        proc.wait()
        why = proc.stderr.read().decode(errors="replace").strip().splitlines()
        raise OSError(errno.EIO, f"{tree.path}: the walk stopped (exit code {proc.returncode}"
                                 f"{': ' + why[-1] if why else ''})")
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        for f in (proc.stdin, proc.stdout, proc.stderr):
            if f:
                f.close()

def main() -> int:
    root, exclude, one_fs, paths, sigs = marshal.loads(sys.stdin.buffer.read())
    out = sys.stdout.fileno()
    tree = LocalTree(root, exclude, one_fs)
    batch: list = []
    sent = time.monotonic()
    try:
        for item in walk_items(tree, paths, sigs):
            batch.append(item)
            if len(batch) >= FRAME_ITEMS or (type(item) is tuple and len(item) == 2
                                             and time.monotonic() - sent >= FRAME_DELAY):
                _write(out, batch)
                batch, sent = [], time.monotonic()
    except OSError as e:
        _write(out, batch)
        _write(out, ("oserror", e.errno or 0, e.strerror or str(e)))
        return 0
    _write(out, batch)
    _write(out, ("end",))
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BrokenPipeError:  # the backup process stopped reading (aborted): nothing to tell anyone
        os._exit(1)
