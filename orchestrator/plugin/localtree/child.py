"""The walker process (started by ``delta.spawn_walk``): reads its request on stdin, walks the tree against the
parent listing and writes frames of items on stdout (the format is described in ``delta``)."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterator

from orchestrator.plugin.localtree.delta import FRAME_DELAY, FRAME_ITEMS, write_frame
from orchestrator.plugin.localtree.walk import LocalTree


def walk_items(tree: LocalTree, paths: list[str], sigs: list) -> Iterator:
    """Items in walk order: runs of unchanged parent entries, and new or changed entries."""
    index = {p: k for k, p in enumerate(paths)}

    def previous(path: str) -> bytes | None:
        k = index.get(path)
        return None if k is None else sigs[k]

    start = end = -1  # the run being built: parent entries start..end-1
    for e in tree.walk(previous if paths else None):
        if type(e) is str:
            k = index[e]
            if k != end:
                if start >= 0:
                    yield (start, end)
                start = k
            end = k + 1
            continue
        if start >= 0:
            yield (start, end)
        start = end = -1
        assert isinstance(e, dict)
        yield (index.get(e["p"], -1), e)
    if start >= 0:
        yield (start, end)


def main() -> int:
    import marshal

    root, exclude, one_fs, paths, sigs = marshal.loads(sys.stdin.buffer.read())
    out = sys.stdout.fileno()
    tree = LocalTree(root, exclude, one_fs)
    batch: list = []
    sent = time.monotonic()
    try:
        for item in walk_items(tree, paths, sigs):
            batch.append(item)
            if len(batch) >= FRAME_ITEMS or (type(item[1]) is dict and time.monotonic() - sent >= FRAME_DELAY):
                write_frame(out, batch)
                batch, sent = [], time.monotonic()
    except OSError as e:
        write_frame(out, batch)
        write_frame(out, ("oserror", e.errno or 0, e.strerror or str(e)))
        return 0
    write_frame(out, batch)
    write_frame(out, ("end",))
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BrokenPipeError:  # the backup process stopped reading (aborted): nothing to tell anyone
        os._exit(1)
