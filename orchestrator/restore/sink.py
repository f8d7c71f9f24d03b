"""Restore tree entries into a TreeSink (a share, in place or into another folder) instead of a local
directory: the same selection, path checks and overwrite rules as a local restore; files are written whole
under a temporary name before they replace anything; folders get their times back after their contents."""

from __future__ import annotations

from collections.abc import Callable, Iterator

from orchestrator.cbt.tree import TreeRestoreReport, _safe_rel, _selected, should_replace
from orchestrator.plugin.streams import TreeSink
from orchestrator.vault.tree import iter_tree


def restore_tree_to_sink(
    read_chunk: Callable[[bytes, str], bytes],
    item: dict,
    read_meta: Callable[[bytes], bytes],
    sink: TreeSink,
    selection: list[str] | None = None,
    overwrite: str = "never",
    progress: Callable[[int], None] | None = None,
) -> TreeRestoreReport:
    rep = TreeRestoreReport()
    dirs_meta: list[tuple[str, dict]] = []
    made: set[str] = set()

    def parents(rel: str) -> None:
        folder = rel.rpartition("/")[0]
        if folder and folder not in made:
            sink.make_dir(folder)
            made.add(folder)

    for e in iter_tree(item, read_meta):
        p = e["p"]
        if not _selected(p, selection):
            continue
        if not _safe_rel(p):
            rep.errors.append(f"{p}: unsafe path in the snapshot, not restored")
            continue
        try:
            if e["t"] == "d":
                exists, is_dir, _mt = sink.lexists(p) if p else (True, True, 0)
                if exists and not is_dir:
                    rep.errors.append(f"{p}: a file stands where the folder was, not replaced")
                    continue
                if p:
                    sink.make_dir(p)
                    made.add(p)
                dirs_meta.append((p, e))
                rep.dirs += 1
                continue
            if "e" in e:
                rep.errors.append(f"{p}: was not backed up ({e['e']})")
                continue
            if e["t"] != "f":
                rep.errors.append(f"{p}: {'a link' if e['t'] in 'lh' else 'a special file'} cannot be restored to "
                                  f"{sink.root}")
                continue
            exists, is_dir, mtime = sink.lexists(p)
            if exists and is_dir:
                rep.errors.append(f"{p}: a folder stands there, not replaced")
                continue
            if exists and not should_replace(overwrite, e.get("mt", 0), mtime):
                rep.skipped.append(p)
                continue
            parents(p)
            rep.bytes += sink.write_file(p, _content(read_chunk, e, progress))
            for name, refs in e.get("xs", {}).items():  # alternate data streams, where the sink keeps them
                if hasattr(sink, "write_stream"):
                    rep.bytes += sink.write_stream(p, name, _content(read_chunk, {"p": f"{p}{name}", "c": refs},
                                                                     progress))
            sink.set_meta(p, e)
            rep.files += 1
        except OSError as err:
            rep.errors.append(f"{p}: {err.strerror or err}")
    for p, e in reversed(dirs_meta):
        try:
            sink.set_meta(p, e)
        except OSError as err:
            rep.errors.append(f"{p or '.'}: {err.strerror or err}")
    return rep


def _content(read_chunk: Callable[[bytes, str], bytes], e: dict,
             progress: Callable[[int], None] | None) -> Iterator[bytes]:
    offset = 0
    for hexid, length in e.get("c", ()):
        data = read_chunk(bytes.fromhex(hexid), f"{e['p']} at offset {offset}")
        offset += length
        if progress:
            progress(length)
        yield data
