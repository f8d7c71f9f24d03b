"""The walker process (started by ``delta.spawn_walk``): reads its request on stdin, walks the tree against the
parent listing and writes frames of items on stdout (the format is described in ``delta``).

A nightly incremental waits for this walk (an ``lstat`` and a signature per entry) with the second core mostly
idle, so a large tree is walked by two processes: a forked helper walks the directories that hold about the
second half of the parent listing's entries (``split_point``) into an unnamed file, and the items under each are
spliced into the stream right after that directory's own entry: the order of a walk by one process."""

from __future__ import annotations

import contextlib
import errno
import marshal
import os
import signal
import sys
import time
from collections.abc import Container, Iterator
from typing import Any

from orchestrator.plugin.localtree.delta import FRAME_DELAY, FRAME_ITEMS, read_frame, write_frame
from orchestrator.plugin.localtree.walk import LocalTree

#: parent entries under which one process walks alone (forking and splicing cost more than they save)
SPLIT_MIN = 20_000


def split_point(paths: list[str]) -> list[str]:
    """Sibling directories, in walk order, whose subtrees hold nearest the last half of the parent listing's
    entries (a fifth at least; none for a small or flat tree). Looked for from the top down: paths are in walk
    order, so a directory's subtree follows it, contiguous."""
    n = len(paths)
    if n < SPLIT_MIN:
        return []
    lo, hi = 1, n  # paths[0] is the root
    for _depth in range(4):
        subtrees: list[tuple[int, int]] = []  # (index, end of its subtree) of each directory at this level
        k = lo
        while k < hi:
            under = f"{paths[k]}/"
            end = k + 1
            while end < hi and paths[end].startswith(under):
                end += 1
            if end > k + 1:
                subtrees.append((k, end))
            k = end
        if not subtrees:
            return []
        k, end = max(subtrees, key=lambda t: t[1] - t[0])
        if end - k > n * 4 / 5:  # one directory holds most: look among its own
            lo, hi = k + 1, end
            continue
        best, held = [], 0
        for k, end in reversed(subtrees):  # the last ones, while that brings the share nearer half
            if abs(n / 2 - (held + end - k)) >= abs(n / 2 - held):
                break
            best.append(paths[k])
            held += end - k
        return best[::-1] if held >= n / 5 else []
    return []


def walk_items(tree: LocalTree, paths: list[str], sigs: list, skip: Container = (), only: str | None = None,
               part: _Part | None = None, index: dict[str, int] | None = None) -> Iterator:
    """Items in walk order: runs of unchanged parent entries, and new or changed entries; under each directory of
    ``skip``, ``part``'s items for it, right after its entry. ``index``: each parent path's position (made here
    when not given)."""
    if index is None:
        index = {p: k for k, p in enumerate(paths)}

    def previous(path: str) -> bytes | None:
        k = index.get(path)
        return None if k is None else sigs[k]

    start = end = -1  # the run being built: parent entries start..end-1
    for e in tree.walk(previous if paths else None, skip, only):
        if type(e) is str:
            k = index[e]
            if k != end:
                if start >= 0:
                    yield (start, end)
                start = k
            end = k + 1
            if part is not None and e in skip:
                yield (start, end)
                start = end = -1
                yield from part.under(e)
            continue
        if start >= 0:
            yield (start, end)
        start = end = -1
        assert isinstance(e, dict)
        yield (index.get(e["p"], -1), e)
        if part is not None and e["p"] in skip and e["t"] == "d":  # not if it became a link or a file meanwhile
            yield from part.under(e["p"])
    if start >= 0:
        yield (start, end)


class _Part:
    """A forked helper that walks under some directories into an unnamed file (a ``("dir", path)`` frame before
    each one's items), read back once it has finished."""

    def __init__(self, tree: LocalTree, paths: list[str], sigs: list, dirs: list[str],
                 index: dict[str, int]) -> None:
        self.fd = os.memfd_create("dobaas-walk-part")
        self.file: Any = None
        self._pushed: Any = None  # a frame read ahead: the next directory's marker
        self.pid: int | None = os.fork()
        if self.pid == 0:  # the helper: never returns
            code = 0
            try:
                for d in dirs:
                    write_frame(self.fd, ("dir", d))
                    batch: list = []
                    for item in walk_items(tree, paths, sigs, only=d, index=index):
                        batch.append(item)
                        if len(batch) >= FRAME_ITEMS:
                            write_frame(self.fd, batch)
                            batch = []
                    write_frame(self.fd, batch)
            except OSError as e:
                write_frame(self.fd, ("oserror", e.errno or 0, e.strerror or str(e)))
            except BaseException:
                code = 1
            os._exit(code)

    def under(self, d: str) -> Iterator:
        """The items under ``d`` (after those of directories the walk no longer met: passed over)."""
        if self.file is None:
            self.close()
            self.file = os.fdopen(self.fd, "rb")
            self.file.seek(0)  # the helper's writes moved the offset both share
        while True:
            frame = self._frame()
            if frame is None:
                return
            if type(frame) is tuple:
                if frame[0] == "oserror":
                    raise OSError(frame[1], frame[2])
                if frame[1] == d:
                    break
        while (frame := self._frame()) is not None:
            if type(frame) is tuple:
                self._pushed = frame
                return
            yield from frame

    def _frame(self) -> Any:
        if self._pushed is not None:
            pushed, self._pushed = self._pushed, None
            return pushed
        return read_frame(self.file.read)

    def close(self) -> None:
        """Wait for the helper to finish; raise if it failed."""
        pid, self.pid = self.pid, None
        if pid is None:
            return
        _pid, status = os.waitpid(pid, 0)
        if os.waitstatus_to_exitcode(status) != 0:
            raise OSError(errno.EIO, "the second walker process failed")

    def kill(self) -> None:
        if self.pid is not None:
            with contextlib.suppress(OSError):
                os.kill(self.pid, signal.SIGKILL)
            with contextlib.suppress(OSError):
                os.waitpid(self.pid, 0)
            self.pid = None


def main() -> int:
    root, exclude, one_fs, paths, sigs = marshal.loads(sys.stdin.buffer.read())
    out = sys.stdout.fileno()
    tree = LocalTree(root, exclude, one_fs)
    batch: list = []
    sent = time.monotonic()
    dirs = split_point(paths)
    index = {p: k for k, p in enumerate(paths)}  # made once, before the helper is forked: shared with it
    part = None
    if dirs:
        try:
            part = _Part(tree, paths, sigs, dirs, index)
        except OSError:  # no memfd or no fork here: one process walks it all
            dirs = []
    try:
        for item in walk_items(tree, paths, sigs, set(dirs), part=part, index=index):
            batch.append(item)
            if len(batch) >= FRAME_ITEMS or (type(item[1]) is dict and time.monotonic() - sent >= FRAME_DELAY):
                write_frame(out, batch)
                batch, sent = [], time.monotonic()
    except OSError as e:
        write_frame(out, batch)
        write_frame(out, ("oserror", e.errno or 0, e.strerror or str(e)))
        return 0
    finally:
        if part is not None:  # its items no longer needed (the walk failed, or met none of its directories)
            part.kill()
    write_frame(out, batch)
    write_frame(out, ("end",))
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BrokenPipeError:  # the backup process stopped reading (aborted): nothing to tell anyone
        os._exit(1)
