"""The local walk in a process of its own (``child``), so the 100,000 lstat calls of a nightly incremental run on
the second core while the backup process opens the vault, reads the changed files and writes the listing. This
module is the backup process's side: it starts the child and reads its frames.

Input (stdin, one marshal blob): root, exclude patterns, one_file_system, and the parent listing as two lists in
walk order: paths and stat signatures (None: must not be reused). Output (stdout): length-prefixed marshal frames,
each a list of items in walk order (see ``orchestrator.plugin.streams.WalkItem``): ``(i, j)`` parent entries
i..j-1 unchanged, ``(k, entry)`` a new or changed entry (k: its parent index, -1 if new). A final frame
``("end",)`` or ``("oserror", errno, text)`` closes the stream.

The child imports only the standard library, this module's framing and the walk: it starts in a few tens of
milliseconds.
"""

from __future__ import annotations

import errno
import logging
import marshal
import os
import struct
import subprocess
import sys
import tempfile
from collections.abc import Callable, Generator, Iterator
from typing import Any, BinaryIO, Protocol

from orchestrator.memory import helper_env

log = logging.getLogger(__name__)

FRAME = struct.Struct("<I")
FRAME_ITEMS = 256
#: a frame holding a changed entry leaves after this long at most, so its read starts while the walk goes on
FRAME_DELAY = 0.02


class Tree(Protocol):
    """What the child needs to walk a tree again (a LocalTree; not imported here: the walk imports us)."""

    path: str
    exclude: list[str]
    one_file_system: bool


def write_frame(fd: int, obj: Any) -> None:
    data = marshal.dumps(obj)
    view = memoryview(FRAME.pack(len(data)) + data)
    while view:
        view = view[os.write(fd, view) :]


def read_frame(read: Callable[[int], bytes]) -> Any:
    """The next frame written by ``write_frame``, or None at the end of the stream."""
    head = read(FRAME.size)
    if len(head) < FRAME.size:
        return None
    return marshal.loads(read(FRAME.unpack(head)[0]))


def spawn_walk(tree: Tree, paths: list[str], sigs: list) -> _Walk | None:
    """Start ``walk_items`` for ``tree`` in a child process; its items as they come, or None when no child can
    be started here (the caller walks in its own process then). The request goes through an in-memory file, so
    the child starts walking at once while this process goes on with other work."""
    request = _request_file(marshal.dumps((tree.path, tree.exclude, tree.one_file_system, paths, sigs)))
    try:
        proc = subprocess.Popen([sys.executable, "-m", "orchestrator.plugin.localtree.child"], stdin=request,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, close_fds=True, env=helper_env())
    except OSError as e:
        log.info("walk of %s in this process: no walker process (%s: %s)", tree.path, sys.executable, e.strerror)
        return None
    finally:
        request.close()
    return _Walk(proc, tree)


def _request_file(data: bytes) -> BinaryIO:
    try:
        f: BinaryIO = os.fdopen(os.memfd_create("dobaas-walk"), "w+b")
    except (AttributeError, OSError):
        f = tempfile.TemporaryFile()  # noqa: SIM115  # handed to the child, closed by spawn_walk
    f.write(data)
    f.seek(0)
    return f


class _Walk:
    """The child's items. ``close`` (also when the items were never read) stops the child."""

    def __init__(self, proc: subprocess.Popen, tree: Tree) -> None:
        self.proc, self.tree = proc, tree
        self._items: Generator[Any, None, None] = self._read()

    def __iter__(self) -> Iterator:
        return self._items

    def _read(self) -> Generator[Any, None, None]:
        assert self.proc.stdout and self.proc.stderr
        read = self.proc.stdout.read
        while (frame := read_frame(read)) is not None:
            if type(frame) is tuple:
                if frame[0] == "oserror":
                    raise OSError(frame[1], frame[2])
                return
            yield from frame
        rc = self.proc.wait()
        why = self.proc.stderr.read().decode(errors="replace").strip().splitlines()
        how = f"killed by signal {-rc}" if rc < 0 else f"exit code {rc}"
        raise OSError(errno.EIO, f"{self.tree.path}: the walk stopped ({how}{': ' + why[-1] if why else ''})")

    def close(self) -> None:
        self._items.close()
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        for f in (self.proc.stdout, self.proc.stderr):
            if f:
                f.close()
